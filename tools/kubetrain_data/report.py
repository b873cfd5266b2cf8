"""Console output shared by the subcommands: progress bars on stderr, tables on stdout.

Progress goes to stderr so stdout stays clean for tables and `--json`. When stderr is not
a terminal (CI logs, pipes) rich draws no live bar; `quiet` turns everything off.

rich is imported on first use, not with this module: it takes about 40 ms to import, and
`csv-to-images --quiet --json` (what scripts and the benchmark run) never draws anything.
`stdout` and `stderr` are therefore created by the module's `__getattr__`, and
`progress(quiet=True)` returns a do-nothing bar with the three methods the commands use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    stdout: Console
    """Tables and results."""
    stderr: Console
    """Progress and warnings."""


def __getattr__(name: str) -> Any:
    if name in ("stdout", "stderr"):
        from rich.console import Console

        console = Console(stderr=name == "stderr", highlight=False, soft_wrap=True)
        globals()[name] = console  # later lookups find it without coming back here
        return console
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Bar(Protocol):
    """What the commands use of a progress display (rich.progress.Progress has it all)."""

    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...

    def update(
        self, task_id: Any, *, completed: float | None = ..., description: str | None = ...
    ) -> None: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...

    def __enter__(self) -> Bar: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _Silent:
    """The progress display of --quiet: accepts every call and draws nothing."""

    def add_task(self, description: str, *, total: float | None = None) -> int:
        return 0

    def update(
        self, task_id: Any, *, completed: float | None = None, description: str | None = None
    ) -> None:
        return None

    def advance(self, task_id: Any, advance: float = 1) -> None:
        return None

    def __enter__(self) -> _Silent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def progress(quiet: bool, in_bytes: bool = False) -> Bar:
    """A progress bar on stderr; nothing at all when QUIET. IN_BYTES shows sizes."""
    if quiet:
        return _Silent()
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar: Bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn() if in_bytes else MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=__getattr__("stderr"),
        transient=False,
    )
    return bar


def table(
    title: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    total: Sequence[object] | None = None,
) -> Table:
    """A right-aligned numeric table with an optional bold total row."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        out.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(_fmt(v) for v in row))
    if total is not None:
        out.add_row(*(_fmt(v) for v in total), style="bold", end_section=True)
    return out


def _fmt(value: object) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def label_sort_key(label: str) -> tuple[int, int | str]:
    """Numeric labels in numeric order, then the others alphabetically."""
    return (0, int(label)) if label.isdigit() else (1, label)

"""Console output shared by the subcommands: progress bars on stderr, tables on stdout.

Progress goes to stderr so stdout stays clean for tables and `--json`. When stderr is not
a terminal (CI logs, pipes) rich draws no live bar; `quiet` turns everything off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
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
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
"""Tables and results."""
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
"""Progress and warnings."""


def progress(quiet: bool, in_bytes: bool = False) -> Progress:
    """A progress bar on stderr; disabled entirely when QUIET. IN_BYTES shows sizes."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn() if in_bytes else MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=quiet,
        transient=False,
    )


def table(
    title: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    total: Sequence[object] | None = None,
) -> Table:
    """A right-aligned numeric table with an optional bold total row."""
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

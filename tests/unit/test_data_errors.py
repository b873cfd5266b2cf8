"""User errors get one clear line and a non-zero exit, never a traceback; --help everywhere."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubetrain_data.cli import main

from tests.support.data import digits, run, write_csv

SCRIPT = str(Path(sys.executable).parent / "kubetrain-data")


def _one_line_error(code: int, stdout: str, stderr: str, *words: str) -> None:
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kubetrain-data: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "the CSV is empty"),
        (b"\n\n  \n", "the CSV is empty"),
        (gzip.compress(b""), "the CSV is empty"),
        (
            b"label," + ",".join(f"pixel{i}" for i in range(784)).encode() + b"\n",
            "header but no data rows",
        ),
        (b"a,b,c\n1,2,3\n", "the header has 3 columns; expected 785"),
        (b"\x1f\x8b\x08\x00garbage-not-gzip", "not a valid gzip file"),
    ],
    ids=["empty", "blank-lines", "empty-gz", "header-only", "short-header", "corrupt-gz"],
)
def test_unusable_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: str
) -> None:
    csv = tmp_path / "in.csv"
    csv.write_bytes(content)
    out = tmp_path / "out"
    _one_line_error(*run(capsys, "csv-to-images", str(csv), "--out", str(out)), words)
    assert not out.exists()  # the output directory is only created for a readable CSV


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        *run(capsys, "csv-to-images", str(tmp_path / "nope.csv")), "nope.csv: no such file"
    )


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(*run(capsys, "csv-to-images", str(tmp_path)), "is a directory")


def test_output_under_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(1)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "label-first")
    (tmp_path / "file").write_text("x")
    _one_line_error(
        *run(capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "file" / "out")),
        "cannot create output directory",
    )
    _one_line_error(
        *run(capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "file")), "not a directory"
    )


@pytest.fixture
def locked_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot create entries in.

    Permission bits do not stop root, so as root the directory is made immutable
    (chattr +i, which root obeys); otherwise it is chmod 0555.
    """
    path = tmp_path / "locked"
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True, timeout=30)
    else:
        path.chmod(0o555)
    try:
        yield path
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True, timeout=30)
        path.chmod(0o755)


def test_unwritable_output_dir(
    tmp_path: Path, locked_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(OSError):  # the precondition really holds
        (locked_dir / "probe").mkdir()
    pixels, labels = digits(1)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "label-first")
    code, stdout, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(locked_dir))
    _one_line_error(code, stdout, stderr, f"output directory {locked_dir} is not writable")
    assert "Permission denied" in stderr or "Operation not permitted" in stderr
    assert list(locked_dir.iterdir()) == []
    # a missing sub-directory of it cannot be created either
    code, stdout, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(locked_dir / "sub"))
    _one_line_error(code, stdout, stderr, "cannot create output directory")


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [SCRIPT, "csv-to-images", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_line_error(proc.returncode, proc.stdout, proc.stderr, "no such file")


@pytest.mark.parametrize("command", [[], ["csv-to-images"], ["sample-csv"], ["upload"], ["mutate"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: kubetrain-data")
    expected_flags = {
        "csv-to-images": [
            "--out",
            "--label-column",
            "--no-header",
            "--per-label",
            "--seed",
            "--skip-bad",
            "--workers",
        ],
        "sample-csv": ["--layout", "--limit"],
        "upload": ["--workers", "--create-bucket", "--dry-run", "--endpoint", "--retries"],
        "mutate": ["--label", "--add", "--modify", "--delete", "--seed", "--json"],
    }.get(command[0] if command else "", ["csv-to-images", "sample-csv", "upload", "mutate"])
    for flag in expected_flags:
        assert flag in text


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["mutate", "s3://b/p", "--label", "3"],
        ["csv-to-images", "x.csv", "--per-label", "0"],
        ["bogus"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    capsys.readouterr()

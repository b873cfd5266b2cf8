"""csv-to-images is idempotent: content-named files, no duplicates, existing content respected."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.data import (
    digest_name,
    digits,
    expected,
    png_bytes_via_pil,
    read_dataset,
    run,
    run_json,
    snapshot,
    write_csv,
)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_second_run_changes_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    pixels, labels = digits(10)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "mnist-in-csv")
    out = tmp_path / "out"
    code, _stdout, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--workers", workers
    )
    assert code == 0, stderr
    before = snapshot(out)
    assert len([p for p in before if p.endswith(".png")]) == 100
    time.sleep(0.05)  # so a rewrite would show in mtime/ctime even on coarse clocks
    code, doc, stderr = run_json(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--workers", workers
    )
    assert code == 0, stderr
    assert snapshot(out) == before  # same entries, same mtime, ctime and inode
    assert doc["totals"] == {
        "rows": 100,
        "duplicate": 0,
        "unsampled": 0,
        "present": 100,
        "written": 0,
        "files": 100,
    }


def test_identical_rows_make_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(2)
    rep = np.concatenate([pixels, pixels, pixels[:3]])
    rep_labels = labels + labels + labels[:3]
    csv = write_csv(tmp_path / "in.csv", rep, rep_labels, "label-first")
    out = tmp_path / "out"
    # tiny chunks on two workers: duplicates land in different processes
    code, doc, stderr = run_json(
        capsys, "csv-to-images", str(csv), "--out", str(out), "--chunk-rows", "3", "--workers", "2"
    )
    assert code == 0, stderr
    assert read_dataset(out) == expected(pixels, labels)
    assert doc["totals"] == {
        "rows": 43,
        "duplicate": 23,
        "unsampled": 0,
        "present": 0,
        "written": 20,
        "files": 20,
    }


def test_same_pixels_under_two_labels_is_two_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, _ = digits(1)
    csv = write_csv(tmp_path / "in.csv", pixels[:1].repeat(2, axis=0), ["a", "b"], "label-first")
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"), "--label-column", "first"
    )
    assert code == 0, stderr
    name = digest_name(pixels[0])
    assert (tmp_path / "o" / "a" / name).is_file() and (tmp_path / "o" / "b" / name).is_file()


def test_differently_named_file_with_same_content_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(3)
    out = tmp_path / "out"
    i = labels.index("3")
    (out / "3").mkdir(parents=True)
    mine = out / "3" / "my-own-name.png"
    mine.write_bytes(png_bytes_via_pil(pixels[i]))  # other encoder: other bytes, same pixels
    old = os.stat(mine)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "digit-recognizer")
    code, doc, stderr = run_json(capsys, "csv-to-images", str(csv), "--out", str(out))
    assert code == 0, stderr
    assert not (out / "3" / digest_name(pixels[i])).exists()
    new = os.stat(mine)
    assert (new.st_mtime_ns, new.st_ino, new.st_size) == (old.st_mtime_ns, old.st_ino, old.st_size)
    assert read_dataset(out) == expected(pixels, labels)  # every row present exactly once
    assert doc["labels"]["3"] == {
        "rows": 3,
        "duplicate": 0,
        "unsampled": 0,
        "present": 1,
        "written": 2,
        "files": 3,
    }
    assert doc["totals"]["written"] == 29


def test_file_whose_content_does_not_match_its_name_is_not_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(1)
    out = tmp_path / "out"
    label = labels[0]
    (out / label).mkdir(parents=True)
    squatter = out / label / digest_name(pixels[0])
    other = pixels[1]
    squatter.write_bytes(png_bytes_via_pil(other))  # someone edited the file in place
    csv = write_csv(tmp_path / "in.csv", pixels[:1], labels[:1], "mnist-in-csv")
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(out))
    assert code == 0, stderr
    assert read_dataset(out)[(label, other.tobytes())] == 1  # left alone
    suffixed = out / label / digest_name(pixels[0]).replace(".png", "-2.png")
    assert suffixed.is_file()
    assert read_dataset(out)[(label, pixels[0].tobytes())] == 1


def test_other_files_in_label_dirs_are_ignored_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(1)
    out = tmp_path / "out"
    (out / "0").mkdir(parents=True)
    (out / "0" / "notes.txt").write_text("keep me")
    (out / "0" / "broken.png").write_bytes(b"not a png")
    (out / "README").write_text("top-level file")
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "label-first")
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(out))
    assert code == 0, stderr
    assert (out / "0" / "notes.txt").read_text() == "keep me"
    assert (out / "0" / "broken.png").read_bytes() == b"not a png"
    assert (out / "0" / digest_name(pixels[labels.index("0")])).is_file()


def test_per_label_sample_is_bounded_seeded_and_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(40)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "mnist-in-csv")

    def names(out: Path) -> dict[str, set[str]]:
        return {d.name: {f.name for f in d.iterdir()} for d in out.iterdir()}

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, "7"), (b, "7"), (c, "8")):
        code, stdout, stderr = run(
            capsys,
            "csv-to-images",
            str(csv),
            "--out",
            str(out),
            "--per-label",
            "5",
            "--seed",
            seed,
            "--chunk-rows",
            "33",
        )
        assert code == 0, stderr
        assert "not sampled" in stdout
    assert all(len(files) == 5 for files in names(a).values()) and len(names(a)) == 10
    assert names(a) == names(b)
    assert names(a) != names(c)
    sampled = read_dataset(a)
    assert set(sampled) <= set(expected(pixels, labels))
    before = snapshot(a)
    code, stdout, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(a), "--per-label", "5", "--seed", "7"
    )
    assert code == 0, stderr
    assert snapshot(a) == before


def test_per_label_counts_distinct_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = digits(3)
    rep = np.concatenate([pixels] * 4)
    csv = write_csv(tmp_path / "in.csv", rep, labels * 4, "label-first")
    code, _, stderr = run(
        capsys, "csv-to-images", str(csv), "--out", str(tmp_path / "o"), "--per-label", "3"
    )
    assert code == 0, stderr
    assert read_dataset(tmp_path / "o") == expected(pixels, labels)


def test_stale_staging_dir_of_dead_run_is_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    stale = out / ".kubetrain-staging-999999999-abc"
    (stale / "3").mkdir(parents=True)
    (stale / "3" / "x.png").write_bytes(b"half")
    pixels, labels = digits(1)
    csv = write_csv(tmp_path / "in.csv", pixels, labels, "label-first")
    code, _, stderr = run(capsys, "csv-to-images", str(csv), "--out", str(out))
    assert code == 0, stderr
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == [str(d) for d in range(10)]


def test_workers_and_chunking_do_not_change_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, labels = digits(15)
    csv = write_csv(tmp_path / "in.csv.gz", pixels, labels, "label-last")
    results = []
    for i, (workers, chunk) in enumerate((("1", "1000"), ("2", "7"), ("3", "1"))):
        out = tmp_path / f"o{i}"
        code, _, stderr = run(
            capsys,
            "csv-to-images",
            str(csv),
            "--out",
            str(out),
            "--workers",
            workers,
            "--chunk-rows",
            chunk,
        )
        assert code == 0, stderr
        results.append({p: None for p in snapshot(out)}.keys())
    assert results[0] == results[1] == results[2]

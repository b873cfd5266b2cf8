"""`python -m kubetrain_loadgen`: load one inference endpoint on 127.0.0.1 and print the figures.

Examples:
  python -m kubetrain_loadgen http://127.0.0.1:3000/predict -c 8 --seconds 10
  python -m kubetrain_loadgen http://127.0.0.1:3000/classify -c 64 --batch 16 --multipart
"""

from __future__ import annotations

import argparse
import json
import sys

from kubetrain_loadgen.core import LoadSpec, TargetRefused, run_load_sync
from kubetrain_loadgen.payloads import (
    classify_json_payloads,
    classify_multipart_payloads,
    mnist_pngs,
    predict_payloads,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubetrain-loadgen",
        description="Bounded async HTTP load against a loopback inference endpoint "
        "(/predict: one image per request; /classify: --batch images per request).",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="http://127.0.0.1:PORT/predict or .../classify (loopback only)")
    parser.add_argument(
        "-c", "--concurrency", type=int, default=8, help="outstanding requests (default 8)"
    )
    parser.add_argument(
        "-n", "--requests", type=int, default=2000, help="max requests measured (default 2000)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="max seconds measured (default 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="unrecorded requests first (default 50)"
    )
    parser.add_argument(
        "--batch", type=int, default=16, help="images per /classify request (default 16)"
    )
    parser.add_argument(
        "--multipart", action="store_true", help="send /classify images as multipart files"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    spec = LoadSpec(
        url=args.url,
        concurrency=args.concurrency,
        max_requests=args.requests,
        max_seconds=args.seconds,
        warmup_requests=args.warmup,
        timeout_s=args.timeout,
    )
    try:
        spec.validate()
    except (TargetRefused, ValueError) as exc:
        print(f"kubetrain-loadgen: {exc}", file=sys.stderr)
        return 2
    images, _ = mnist_pngs(512)
    if args.url.rstrip("/").endswith("/classify"):
        build = classify_multipart_payloads if args.multipart else classify_json_payloads
        payloads = build(images, args.batch)
    else:
        payloads = predict_payloads(images)
    print(
        f"loading {args.url}: concurrency {args.concurrency}, <= {args.requests} requests, "
        f"<= {args.seconds:g} s (after {args.warmup} warm-up requests)",
        file=sys.stderr,
    )
    result = run_load_sync(spec, payloads)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>15}: {value}")
    return 0 if result.ok and not result.failed else 1


if __name__ == "__main__":
    sys.exit(main())

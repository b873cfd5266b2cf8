#!/usr/bin/env python3
"""A scripted trainer and serving *workload* for the operator's platform tests.

The real kubelet runs this in real pods of the real Jobs and Deployments the operator
creates; only what the container does is scripted, by the test, through `kubectl exec`.
One stdlib-only program, dispatched on the name it is called by:

* ``kubetrain-train --manifest URI`` (the training Job's command) waits until
  ``kubetrain-stub finish`` hands it an outcome (JSON ``{"exitCode": N, "message": "..."}``
  on stdin), writes the message to the termination log and exits with the code. The
  kubelet reports the terminated container and the real Job controller completes or fails
  the Job, podFailurePolicy included.
* ``kubetrain-serve --bento URI --port P`` (the serving Deployment's command) answers
  ``/livez`` at once and ``/readyz`` only after ``kubetrain-stub ready``: the kubelet's
  probes make the pod Ready (or never, for a rollout that must miss its deadline).

The control files live under /tmp, the pods' writable emptyDir (the root filesystem may be
read-only).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import time
from pathlib import Path

CONTROL = Path(os.environ.get("KUBETRAIN_STUB_DIR", "/tmp/kubetrain-stub"))
OUTCOME = CONTROL / "outcome.json"
READY = CONTROL / "ready"
TERMINATION_LOG = Path(os.environ.get("KUBETRAIN_STUB_TERMINATION_LOG", "/dev/termination-log"))


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # the waiting trainer never reads half an outcome


def train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kubetrain-train (stub)")
    parser.add_argument("--manifest", required=True)
    args = parser.parse_args(argv)
    print(f"stub trainer: manifest {args.manifest}; waiting for the test's outcome", flush=True)
    while not OUTCOME.exists():
        time.sleep(0.1)
    outcome = json.loads(OUTCOME.read_text())
    code = int(outcome["exitCode"])
    TERMINATION_LOG.write_text(str(outcome.get("message", "")))
    print(f"stub trainer: exiting with {code}", flush=True)
    return code


class _Probes(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/livez":
            code = 200
        elif self.path == "/readyz":
            code = 200 if READY.exists() else 503
        else:
            code = 404
        body = f"{code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kubetrain-serve (stub)")
    parser.add_argument("--bento", required=True)
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    print(f"stub serving: bento {args.bento} on port {args.port}", flush=True)
    http.server.ThreadingHTTPServer(("0.0.0.0", args.port), _Probes).serve_forever()
    return 0


def control(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kubetrain-stub")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("finish", help="end the waiting trainer with the outcome JSON on stdin")
    sub.add_parser("ready", help="make the serving stub's /readyz answer 200")
    args = parser.parse_args(argv)
    if args.command == "finish":
        raw = sys.stdin.buffer.read()
        outcome = json.loads(raw)
        if not isinstance(outcome, dict) or not isinstance(outcome.get("exitCode"), int):
            parser.error('stdin must be {"exitCode": <int>, "message": <str>}')
        _write_atomically(OUTCOME, raw)
    else:
        _write_atomically(READY, b"")
    return 0


def main() -> int:
    name = Path(sys.argv[0]).name
    entry = {"kubetrain-train": train, "kubetrain-serve": serve}.get(name, control)
    return entry(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

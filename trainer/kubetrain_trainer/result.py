"""Write the run's result (contract.TrainResult) where Kubernetes picks it up.

The kubelet copies the file at the container's terminationMessagePath (default
/dev/termination-log) into the pod status, truncated at 4 KiB, which is how the
operator learns the outcome without reading logs. `TrainResult.to_message()` keeps it
under the limit. Outside a pod the path is usually missing or not writable: the
result is then logged and printed to stdout instead of failing the run. The result is
always printed as the last stdout line too, so a human running the CLI sees it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kubetrain_contract import TrainResult

from kubetrain_trainer.logs import scrub, warn


def write_result(result: TrainResult, path: str) -> bool:
    """Write the termination message; True if the file was written."""
    message = scrub(result.to_message())
    written = False
    if path:
        try:
            Path(path).write_text(message)
            written = True
        except OSError as exc:
            warn(
                "termination log not writable; result printed to stdout only",
                path=path,
                error=str(exc),
            )
    print(message, flush=True)
    sys.stdout.flush()
    return written

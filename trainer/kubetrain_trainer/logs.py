"""Structured logging: one JSON object per line on stderr, secrets scrubbed.

Every record has `ts`, `level`, `logger`, `event` (the message) and the keyword fields
passed via `log(...)`. Library chatter (TensorFlow, absl, MLflow, BentoML, urllib3) is
kept at WARNING and goes through the same formatter, so `kubectl logs` stays
machine-readable. A `Redactor` filter replaces any registered secret value (the MinIO
secret key) with `***` wherever it might appear — in a message, a field or an
exception text — as a last line of defence; the code never logs secrets on purpose.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

_SECRETS: set[str] = set()
_LOGGER_NAME = "kubetrain.trainer"


def register_secret(value: str) -> None:
    """Never print this value (only values long enough not to mangle ordinary text)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                doc.setdefault(k, v)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(doc, default=str, separators=(",", ":")))


_configured = False


def setup_logging(level: str = "") -> None:
    """Route all logging through the JSON formatter on stderr (idempotent)."""
    global _configured
    # Silence TensorFlow's C++ banner before it is imported anywhere.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    # MLflow installs its own plain-text handler unless told not to.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    lvl = (level or os.environ.get("KUBETRAIN_LOG_LEVEL", "INFO")).upper()
    logging.getLogger("kubetrain").setLevel(getattr(logging, lvl, logging.INFO))
    for noisy in ("tensorflow", "absl", "mlflow", "bentoml", "urllib3", "botocore", "s3fs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    # Keras warns that tf.data input ignores shuffle=True; the pipeline shuffles itself.
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    _configured = True


class _LineLogger(io.TextIOBase):
    """A text stream that turns each written line into a log record (library prints)."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(f"kubetrain.trainer.{name}")
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            if line.strip():
                self._logger.info(line.strip(), extra={"fields": {"source": "library"}})
        return len(s)

    def flush(self) -> None:
        if self._buf.strip():
            self._logger.info(self._buf.strip(), extra={"fields": {"source": "library"}})
        self._buf = ""


@contextlib.contextmanager
def library_output_as_logs() -> Iterator[None]:
    """Route what libraries print (MLflow's "View run ...", registry notices) into JSON logs.

    The JSON handler keeps its reference to the real stderr, so there is no loop.
    """
    out, err = _LineLogger("stdout"), _LineLogger("stderr")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            yield
        finally:
            out.flush()
            err.flush()


def log(event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one structured event with extra fields."""
    logging.getLogger(_LOGGER_NAME).log(level, event, extra={"fields": fields})


def warn(event: str, /, **fields: Any) -> None:
    log(event, logging.WARNING, **fields)


def error(event: str, /, *, with_traceback: bool = False, **fields: Any) -> None:
    logging.getLogger(_LOGGER_NAME).error(event, exc_info=with_traceback, extra={"fields": fields})


def _native_level(line: str) -> str:
    head = line[:1]
    if line.startswith("WARNING") or head == "W":
        return "warning"
    if line.startswith("ERROR") or head == "E":
        return "error"
    if head == "F":
        return "critical"
    return "info"


class NativeStderr:
    """Wrap what native code (TensorFlow's C++ logging, absl) writes to fd 2 as JSON lines.

    fd 2 is pointed at a pipe; a thread copies lines that are already JSON (ours) to
    the real stderr unchanged and wraps any other line as
    `{"ts","level","logger":"native","event"}`. `stop()` restores fd 2, which closes the
    pipe, and waits for the thread to drain it.
    """

    def __init__(self) -> None:
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        out = os.fdopen(os.dup(self._saved), "w", buffering=1, errors="replace")
        self._thread = threading.Thread(
            target=self._pump, args=(read_fd, out), name="native-stderr", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _pump(read_fd: int, out: io.TextIOBase) -> None:
        with os.fdopen(read_fd, "r", errors="replace") as pipe, out:
            for raw in pipe:
                line = raw.rstrip("\n")
                if not line.strip():
                    continue
                if line.startswith("{") and line.endswith("}"):
                    out.write(line + "\n")
                    continue
                doc = {
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                    "level": _native_level(line),
                    "logger": "native",
                    "event": line,
                }
                out.write(scrub(json.dumps(doc, separators=(",", ":"))) + "\n")

    def stop(self) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=5)

"""`kubetrain-train`: the program the training Job runs (see docs/trainer.md).

Reads settings (flags over env), runs the pipeline, writes the TrainResult JSON to
the termination log (and stdout), and exits 0 (done, promoted or not), 2 (bad input:
do not retry) or 75 (transient: retry). SIGTERM (Job deleted, pod evicted) ends the
run as transient with a result saying so, instead of dying silently.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from kubetrain_contract import EXIT_BAD_INPUT, EXIT_TRANSIENT, TrainResult

from kubetrain_trainer.errors import Transient
from kubetrain_trainer.logs import NativeStderr, error, log, register_secret, setup_logging
from kubetrain_trainer.result import write_result
from kubetrain_trainer.settings import SettingsError, TrainerSettings, load_settings


class Terminated(Transient):
    """The pod was asked to stop."""


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    native = NativeStderr()
    native.start()
    try:
        return _main(argv)
    finally:
        native.stop()


def _main(argv: list[str] | None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        result = TrainResult(status="failed", reason=f"bad input: {exc}")
        error("invalid settings", error=str(exc))
        write_result(result, _termination_path_from_env())
        return EXIT_BAD_INPUT
    register_secret(settings.minio_secret_key)
    log("starting", settings=settings.public_params())
    signal.signal(signal.SIGTERM, _on_sigterm)

    from kubetrain_trainer.pipeline import run

    try:
        report = run(settings)
    except Terminated as exc:
        write_result(
            TrainResult(status="failed", reason=f"transient: {exc}"), settings.termination_log
        )
        return EXIT_TRANSIENT
    log("timings", **report.timings, **report.figures)
    write_result(report.result, settings.termination_log)
    return report.exit_code


def _termination_path_from_env() -> str:
    import os

    return os.environ.get("KUBETRAIN_TERMINATION_LOG", TrainerSettings.termination_log)


if __name__ == "__main__":
    sys.exit(main())

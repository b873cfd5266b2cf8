"""The BentoML inference service: one class, `MnistClassifier`, serving a Keras digit model.

Endpoints
- `POST /predict` — the seed project's contract: JSON `{"data": "<base64 PNG/JPEG>"}` ->
  `{"prediction": int, "probabilities": [10 floats], "model_version": "<version>",
  "duration": float}`. `duration` is the seed's name for the answer: its webserver sent
  the predicted class as a float under that key, so a client written for the seed reads
  it unchanged (docs/serving.md has the mapping).
- `POST /classify` — one or many images, as multipart files (field `images`, repeated)
  or JSON (a list `["<base64>", ...]` or `{"images": [...]}`); answers a list of the
  same objects in request order.
- `GET /readyz` answers 200 only once the model is loaded (`__is_ready__`); `/livez`;
  `/metrics` has BentoML's series plus `kubetrain_serving_*` (metrics.py).

Design
- Heavy imports (TensorFlow/Keras) happen in `Engine`, i.e. in the worker's `__init__`,
  so importing this module (for `bentoml build`, tests or tooling) stays cheap.
- The model is the class attribute `model_ref`, a `bentoml.models.BentoModel`, so
  `bentoml build` packs it into the Bento. Its tag comes from `KUBETRAIN_BENTO_MODEL`
  (the trainer sets it while building); inside a built Bento, where that variable is
  usually unset, it is read from the Bento's own bento.yaml. With neither, the module
  still imports (tooling keeps working), but the service refuses to start with a
  message saying what to set.
- Images are decoded and validated *while the request is parsed* (a pydantic validator
  calling the trainer's own `preprocess`), so a bad image fails only its own request
  with 400 naming the index, and the model only ever sees valid (28, 28) arrays.
- Adaptive batching: both endpoints feed one `MicroBatcher` (batcher.py), which merges
  whatever is queued while the model is busy and never waits on purpose. Setting
  KUBETRAIN_SERVING_BATCHER=bentoml makes /classify a BentoML batchable API instead
  (BentoML's CorkDispatcher); batcher.py explains why that is not the default.
- `RequestGuard` (guard.py) wraps both endpoints: body size limit, content types,
  multipart parsing, one JSON error shape, and the request metrics.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated, Any, cast

import bentoml
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, BeforeValidator, Field, ValidatorFunctionWrapHandler, WrapValidator

from kubetrain_serving.guard import RequestGuard
from kubetrain_serving.inputs import check_count, decode_image
from kubetrain_serving.settings import MODEL_ENV, ServingSettings

# A child of BentoML's logger, so it goes wherever BentoML's server logs go.
log = logging.getLogger("bentoml.serve.kubetrain")

SETTINGS = ServingSettings.from_env()
"""Read once, at import, in every process (build, arbiter, workers)."""

SERVICE_NAME = "kubetrain_mnist"


class ClientErrorLogFilter(logging.Filter):
    """Log a rejected request as one INFO line instead of an ERROR with a traceback.

    BentoML logs every exception of an API call, including a client's bad input, with
    a full traceback at ERROR; a flood of bad requests would bury real server errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            errors = exc.errors(include_url=False, include_input=False)
            summary = f"{len(errors)} invalid field(s)" + (
                f", first {errors[0]['loc']}: {errors[0]['msg']}" if errors else ""
            )
        elif isinstance(exc, bentoml.exceptions.BentoMLException) and exc.error_code < 500:
            summary = str(exc)
        else:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        record.msg = str(record.msg).replace("Exception on", "Rejected") + ": %s"
        record.args = (*args, summary[:300])
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


_http_log = logging.getLogger("bentoml._internal.server.http_app")
if not any(type(f).__name__ == ClientErrorLogFilter.__name__ for f in _http_log.filters):
    _http_log.addFilter(ClientErrorLogFilter())  # once, even when the module is re-imported


def _tag_from_bento_yaml() -> str | None:
    """The model packed into the Bento this module was loaded from, if any.

    A built Bento keeps the build context under `<bento>/src/`, so this file is
    `<bento>/src/kubetrain_serving/service.py` and the Bento's metadata is
    `<bento>/bento.yaml`, which lists the packed models.
    """
    bento_yaml = Path(__file__).resolve().parents[2] / "bento.yaml"
    if not bento_yaml.is_file():
        return None
    import yaml

    try:
        info = yaml.safe_load(bento_yaml.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.warning("cannot read %s: %s", bento_yaml, exc)
        return None
    if not isinstance(info, dict):
        return None
    # BentoML 1.4 lists a new-style service's models under its service entry.
    models: list[Any] = []
    for svc in info.get("services") or []:
        if isinstance(svc, dict) and svc.get("name") == SERVICE_NAME:
            models.extend(svc.get("models") or [])
    models.extend(info.get("models") or [])
    tags = {str(m["tag"]) for m in models if isinstance(m, dict) and m.get("tag")}
    if len(tags) == 1:
        return tags.pop()
    if tags:
        log.warning(
            "%s packs several models %s; set %s to choose", bento_yaml, sorted(tags), MODEL_ENV
        )
    return None


def _model_ref() -> bentoml.models.BentoModel | None:
    tag = SETTINGS.model_tag or _tag_from_bento_yaml()
    return bentoml.models.BentoModel(tag) if tag else None


class Prediction(BaseModel):
    """One classified image."""

    prediction: int = Field(description="The predicted digit (class id).")
    probabilities: list[float] = Field(description="Probability of each class, by class id.")
    model_version: str = Field(description="Registered version of the model that answered.")
    duration: float = Field(
        description="The predicted digit as a float: the seed project's name and type for "
        "the answer, kept so the seed's clients work unchanged."
    )


def _validate_image(value: Any, _handler: ValidatorFunctionWrapHandler) -> Any:
    return decode_image(value)


ImageInput = Annotated[str, WrapValidator(_validate_image)]
"""A base64-encoded image in a request (multipart files arrive here re-encoded by the
guard). The validator decodes and preprocesses it while the request is parsed and
yields the (28, 28) float32 array the API function receives."""

ImageList = Annotated[
    list[ImageInput],
    BeforeValidator(functools.partial(check_count, limit=SETTINGS.max_images)),
    Field(min_length=1, description="Base64-encoded PNG/JPEG images (or multipart files)."),
]


@bentoml.service(
    name=SERVICE_NAME,
    workers=SETTINGS.workers,
    threads=1,
    traffic={"timeout": SETTINGS.timeout_s},
    metrics={"enabled": True, "namespace": "bentoml_service"},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/predict", "/classify"]},
)
class MnistClassifier:
    """Digit classifier over the model packed into this Bento."""

    model_ref = _model_ref()

    def __init__(self) -> None:
        from kubetrain_serving.batcher import MicroBatcher
        from kubetrain_serving.engine import Engine, ModelInfo
        from kubetrain_serving.metrics import get_metrics

        self._engine: Engine | None = None
        ref = type(self).model_ref
        if ref is None:
            raise RuntimeError(
                f"no model to serve: set {MODEL_ENV}=<name>:<version> (a model in the BentoML "
                "store) or serve a Bento built with one"
            )
        stored = ref.resolve()  # finds the tag in the (Bento's or global) model store
        engine = Engine(Path(stored.path), threads=SETTINGS.tf_threads)
        self.info = ModelInfo.from_metadata(
            dict(stored.info.metadata), str(stored.tag), engine.num_outputs
        )
        self._metrics = get_metrics()
        self._metrics.serving(
            model_name=self.info.model_name,
            model_version=self.info.model_version,
            mlflow_run_id=self.info.mlflow_run_id,
            dataset_digest=self.info.dataset_digest,
            bento_model=self.info.bento_model_tag,
        )
        self._batcher = MicroBatcher(
            engine.infer,
            max_batch_size=SETTINGS.max_batch_size,
            max_queue_images=SETTINGS.max_queue_images,
            on_batch=self._observe_batch,
        )
        self._engine = engine
        log.info(
            "serving %s version %s (bento model %s, %d classes, %d TF threads, batcher %s)",
            self.info.model_name,
            self.info.model_version,
            self.info.bento_model_tag,
            engine.num_outputs,
            SETTINGS.tf_threads,
            SETTINGS.batcher,
        )

    def __is_ready__(self) -> bool:
        return self._engine is not None

    def _observe_batch(self, images: int, requests: int) -> None:
        self._metrics.batch(images)

    def _predictions(self, probs: NDArray[np.float32]) -> list[Prediction]:
        out: list[Prediction] = []
        for row in probs:
            label = self.info.class_id(int(np.argmax(row)))
            self._metrics.prediction(str(label))
            out.append(
                Prediction(
                    prediction=label,
                    probabilities=row.tolist(),
                    model_version=self.info.model_version,
                    duration=float(label),
                )
            )
        return out

    async def _classify(self, batch: NDArray[np.float32]) -> list[Prediction]:
        """Through the shared micro-batcher; a full queue becomes 503."""
        from kubetrain_serving.batcher import Overloaded

        try:
            probs = await self._batcher.submit(batch)
        except Overloaded as exc:
            raise bentoml.exceptions.ServiceUnavailable(str(exc)) from None
        return self._predictions(probs)

    @bentoml.api(route="/predict")
    async def predict(self, data: str) -> Prediction:
        """Classify one base64-encoded image (the seed project's request format)."""
        try:
            pixels = decode_image(data)
        except ValueError as exc:
            raise bentoml.exceptions.BadInput(f"data: {exc}") from None
        if SETTINGS.batcher == "bentoml":  # no shared batcher: one model call per request
            import anyio.to_thread

            assert self._engine is not None
            probs = await anyio.to_thread.run_sync(self._engine.infer, pixels[np.newaxis])
            return self._predictions(probs)[0]
        return (await self._classify(pixels[np.newaxis]))[0]

    if SETTINGS.batcher == "bentoml":

        @bentoml.api(
            route="/classify",
            batchable=True,
            batch_dim=0,
            max_batch_size=SETTINGS.max_batch_size,
            max_latency_ms=SETTINGS.max_latency_ms,
        )
        def classify(self, images: ImageList) -> list[Prediction]:
            """Classify one or many images, in request order (BentoML adaptive batching)."""
            assert self._engine is not None
            arrays = cast(list[NDArray[np.float32]], images)
            probs = self._engine.infer(np.stack(arrays))
            self._observe_batch(len(arrays), 0)
            return self._predictions(probs)

    else:

        @bentoml.api(route="/classify")
        async def classify(self, images: ImageList) -> list[Prediction]:
            """Classify one or many images, in request order (adaptive micro-batching)."""
            arrays = cast(list[NDArray[np.float32]], images)
            return await self._classify(np.stack(arrays))


cast("bentoml.Service[Any]", MnistClassifier).add_asgi_middleware(
    RequestGuard,
    endpoints=("/predict", "/classify"),
    max_body_bytes=SETTINGS.max_body_bytes,
    max_images=SETTINGS.max_images,
    list_field={"/classify": "images"},
)

"""`MicroBatcher`: opportunistic adaptive batching across concurrent requests.

Policy: never wait on purpose. One consumer task per worker feeds the model; while a
batch is being computed, newly arriving requests queue up, and as soon as the model
is free the consumer takes *everything* queued (FIFO, up to `max_batch_size` images)
as the next batch. At low load every request runs alone with no added latency; as
load grows the batches grow with it, which is what amortises the per-call cost of
TensorFlow. Requests are never split: one whose images alone exceed
`max_batch_size` runs as its own batch.

Why not BentoML's batchable API (CorkDispatcher)? It learns a target wait from the
waits it observes, which include its own waits, so after a burst it keeps holding
single requests back. Measured on this service: one-image /classify requests at
concurrency 1 took ~300 ms each for at least 20 s after a concurrency-64 burst,
where 16-image requests had taken ~6 ms before it; in the benchmark (16 images per request), p50 at concurrency 1
went from 6.2 ms before the burst to 307 ms after it, against 10.2 ms for this
batcher (docs/serving.md). It remains available with KUBETRAIN_SERVING_BATCHER=bentoml.

Overload: the queue is bounded in images (`max_queue_images`); a request that would
overflow it fails fast with `Overloaded` (HTTP 503) instead of waiting for a
timeout. A request cancelled while queued (client gone, server timeout) is dropped
before it reaches the model. The model runs on one dedicated thread, so the event
loop keeps parsing and answering requests while TensorFlow computes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Infer = Callable[[NDArray[np.float32]], NDArray[np.float32]]


class Overloaded(RuntimeError):
    """The batch queue is full; the caller should answer 503 and the client retry later."""


@dataclass
class _Job:
    batch: NDArray[np.float32]
    future: asyncio.Future[NDArray[np.float32]]


class MicroBatcher:
    """Merges concurrent `submit` calls into batched calls of `infer` on one thread."""

    def __init__(
        self,
        infer: Infer,
        *,
        max_batch_size: int,
        max_queue_images: int,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        """`on_batch(images, requests)` is called for every model call (for metrics)."""
        if max_batch_size < 1 or max_queue_images < 1:
            raise ValueError("max_batch_size and max_queue_images must be >= 1")
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_queue_images = max_queue_images
        self._on_batch = on_batch
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_images = 0
        self._wakeup: asyncio.Event | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kubetrain-infer"
        )

    @property
    def queued_images(self) -> int:
        return self._queued_images

    async def submit(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Classify `batch` (N, 28, 28) together with whatever else is queued."""
        if len(batch) == 0:
            raise ValueError("empty batch")
        if self._queued_images + len(batch) > self.max_queue_images:
            raise Overloaded(
                f"inference queue full ({self._queued_images} images waiting, "
                f"limit {self.max_queue_images}); retry later"
            )
        loop = asyncio.get_running_loop()
        if self._consumer is None or self._consumer.done():
            self._wakeup = asyncio.Event()
            self._consumer = loop.create_task(self._consume(), name="kubetrain-batcher")
        assert self._wakeup is not None
        job = _Job(batch, loop.create_future())
        self._queue.append(job)
        self._queued_images += len(batch)
        self._wakeup.set()
        return await job.future

    def _take(self) -> list[_Job]:
        """The next batch: queued jobs in order while they fit (the first always does)."""
        jobs: list[_Job] = []
        size = 0
        while self._queue:
            job = self._queue[0]
            if jobs and size + len(job.batch) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_images -= len(job.batch)
            if job.future.done():  # cancelled while waiting: skip it
                continue
            jobs.append(job)
            size += len(job.batch)
        return jobs

    async def _consume(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                jobs = self._take()
                if not jobs:
                    continue
                batch = jobs[0].batch if len(jobs) == 1 else np.concatenate([j.batch for j in jobs])
                try:
                    probs = await loop.run_in_executor(self._executor, self._infer, batch)
                except Exception as exc:  # the model failed: every request in the batch fails
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                if self._on_batch is not None:
                    self._on_batch(len(batch), len(jobs))
                start = 0
                for job in jobs:
                    end = start + len(job.batch)
                    if not job.future.done():
                        job.future.set_result(probs[start:end])
                    start = end

    def close(self) -> None:
        """Stop the consumer and fail whatever is still queued."""
        if self._consumer is not None:
            self._consumer.cancel()
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.cancel()
        self._queued_images = 0
        self._executor.shutdown(wait=False, cancel_futures=True)

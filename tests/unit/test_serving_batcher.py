"""MicroBatcher: merging, order, splitting of results, overload, failures, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from kubetrain_serving.batcher import MicroBatcher, Overloaded
from numpy.typing import NDArray


class SlowModel:
    """Answers row i with [sum of its pixels, batch size]; blocks while `gate` is closed."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        self.gate.wait(10)
        self.calls.append(len(batch))
        if self.fail:
            raise RuntimeError("model exploded")
        sums = batch.reshape(len(batch), -1).sum(axis=1)
        return np.stack([sums, np.full(len(batch), len(batch), dtype=np.float32)], axis=1)


def images(n: int, value: float) -> NDArray[np.float32]:
    return np.full((n, 28, 28), value, dtype=np.float32)


def test_single_request_runs_at_once_alone() -> None:
    model = SlowModel()

    async def main() -> NDArray[np.float32]:
        batcher = MicroBatcher(model, max_batch_size=8, max_queue_images=100)
        try:
            return await batcher.submit(images(1, 1.0))
        finally:
            batcher.close()

    out = asyncio.run(main())
    assert out.shape == (1, 2) and out[0, 0] == pytest.approx(784.0)
    assert model.calls == [1]


def test_requests_arriving_while_busy_are_merged_in_order() -> None:
    model = SlowModel()
    seen: list[tuple[int, int]] = []

    async def main() -> list[NDArray[np.float32]]:
        batcher = MicroBatcher(
            model,
            max_batch_size=64,
            max_queue_images=1000,
            on_batch=lambda i, r: seen.append((i, r)),
        )
        model.gate.clear()  # the first call blocks, so the others queue up behind it
        first = asyncio.create_task(batcher.submit(images(1, 0.0)))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(images(k, float(k)))) for k in (1, 2, 3)]
        await asyncio.sleep(0.05)
        model.gate.set()
        try:
            return await asyncio.gather(first, *rest)
        finally:
            batcher.close()

    outs = asyncio.run(main())
    assert model.calls == [1, 6]  # the three queued requests went in one call
    assert seen == [(1, 1), (6, 3)]
    for k, out in zip((0, 1, 2, 3), outs, strict=True):
        assert out.shape == (max(k, 1), 2)
        np.testing.assert_allclose(out[:, 0], 784.0 * k)  # each got its own rows back


def test_batches_respect_max_size_but_never_split_a_request() -> None:
    model = SlowModel()

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch_size=4, max_queue_images=1000)
        model.gate.clear()
        blocker = asyncio.create_task(batcher.submit(images(1, 0.0)))
        await asyncio.sleep(0.05)
        jobs = [asyncio.create_task(batcher.submit(images(n, 1.0))) for n in (3, 2, 6, 1)]
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.gather(blocker, *jobs)
        batcher.close()

    asyncio.run(main())
    # 3 fits; 3+2 > 4 -> next; 2 alone (2+6 > 4); 6 alone (bigger than the limit); then 1.
    assert model.calls == [1, 3, 2, 6, 1]


def test_full_queue_fails_fast_with_overloaded() -> None:
    model = SlowModel()

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch_size=4, max_queue_images=5)
        model.gate.clear()
        running = asyncio.create_task(batcher.submit(images(1, 0.0)))
        await asyncio.sleep(0.05)  # taken off the queue: now computing
        queued = asyncio.create_task(batcher.submit(images(4, 0.0)))
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        with pytest.raises(Overloaded, match="inference queue full"):
            await batcher.submit(images(2, 0.0))
        assert time.perf_counter() - t0 < 0.5
        model.gate.set()
        await asyncio.gather(running, queued)
        assert batcher.queued_images == 0
        batcher.close()

    asyncio.run(main())


def test_model_failure_fails_every_request_of_the_batch_and_the_next_work() -> None:
    model = SlowModel()

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch_size=8, max_queue_images=100)
        model.fail = True
        results = await asyncio.gather(
            batcher.submit(images(1, 0.0)), batcher.submit(images(2, 0.0)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        model.fail = False
        out = await batcher.submit(images(1, 1.0))  # the batcher survived
        assert out[0, 0] == pytest.approx(784.0)
        batcher.close()

    asyncio.run(main())


def test_cancelled_requests_never_reach_the_model() -> None:
    model = SlowModel()

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch_size=64, max_queue_images=100)
        model.gate.clear()
        running = asyncio.create_task(batcher.submit(images(1, 0.0)))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(images(7, 0.0)))
        kept = asyncio.create_task(batcher.submit(images(2, 0.0)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        model.gate.set()
        await asyncio.gather(running, kept)
        batcher.close()

    asyncio.run(main())
    assert model.calls == [1, 2]


def test_empty_batch_and_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(SlowModel(), max_batch_size=0, max_queue_images=1)

    async def main() -> None:
        batcher = MicroBatcher(SlowModel(), max_batch_size=2, max_queue_images=2)
        with pytest.raises(ValueError, match="empty batch"):
            await batcher.submit(np.zeros((0, 28, 28), dtype=np.float32))
        batcher.close()

    asyncio.run(main())

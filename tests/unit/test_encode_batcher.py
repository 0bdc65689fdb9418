"""L0's encode batcher: concurrent requests share encoder calls, each gets its own rows
back in order, a failure reaches every request of its batch, and a request that stopped
waiting is never encoded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from routermesh.runtime.encode_batcher import EncodeBatcher
from routermesh.runtime.encoder import FloatArray


class HeldEncoder:
    """Encodes text i as the row [len(text), call number]; the first call waits for
    ``release`` so that the requests sent meanwhile queue up."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_on: str | None = None

    def __call__(self, texts: Sequence[str]) -> FloatArray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(10)
        if self.fail_on in texts:
            raise RuntimeError("encoder broke")
        number = len(self.calls)
        return np.array([[len(t), number] for t in texts], dtype=np.float32)


async def _started(encoder: HeldEncoder) -> None:
    assert await asyncio.to_thread(encoder.started.wait, 10)


async def test_requests_that_arrive_during_a_call_share_the_next_one() -> None:
    encoder = HeldEncoder()
    batcher = EncodeBatcher(encoder)
    first = asyncio.create_task(batcher.encode(["a"]))
    await _started(encoder)
    queued = [asyncio.create_task(batcher.encode(texts)) for texts in (["bb", "ccc"], ["dddd"])]
    await asyncio.sleep(0)  # let both reach the queue
    encoder.release.set()
    assert (await first).tolist() == [[1.0, 1.0]]
    assert (await queued[0]).tolist() == [[2.0, 2.0], [3.0, 2.0]]
    assert (await queued[1]).tolist() == [[4.0, 2.0]]
    assert encoder.calls == [["a"], ["bb", "ccc", "dddd"]]
    assert batcher.calls == 2


async def test_a_batch_stops_at_its_size_limit() -> None:
    encoder = HeldEncoder()
    batcher = EncodeBatcher(encoder, max_texts=3)
    first = asyncio.create_task(batcher.encode(["a"]))
    await _started(encoder)
    queued = [asyncio.create_task(batcher.encode([t, t])) for t in ("b", "c", "d")]
    await asyncio.sleep(0)
    encoder.release.set()
    await asyncio.gather(first, *queued)
    assert encoder.calls == [["a"], ["b", "b"], ["c", "c"], ["d", "d"]]


async def test_a_failure_reaches_its_batch_and_the_next_batch_still_runs() -> None:
    encoder = HeldEncoder()
    encoder.fail_on = "boom"
    batcher = EncodeBatcher(encoder)
    first = asyncio.create_task(batcher.encode(["a"]))
    await _started(encoder)
    doomed = [asyncio.create_task(batcher.encode(t)) for t in (["boom"], ["fine"])]
    await asyncio.sleep(0)
    encoder.release.set()
    await first
    for task in doomed:
        with pytest.raises(RuntimeError, match="encoder broke"):
            await task
    assert (await batcher.encode(["after"])).tolist() == [[5.0, 3.0]]


async def test_a_request_that_stopped_waiting_is_not_encoded() -> None:
    encoder = HeldEncoder()
    batcher = EncodeBatcher(encoder)
    first = asyncio.create_task(batcher.encode(["a"]))
    await _started(encoder)
    gone = asyncio.create_task(batcher.encode(["abandoned"]))
    kept = asyncio.create_task(batcher.encode(["kept"]))
    await asyncio.sleep(0)
    gone.cancel()
    encoder.release.set()
    await first
    assert (await kept).tolist() == [[4.0, 2.0]]
    assert encoder.calls == [["a"], ["kept"]]
    assert batcher.dropped == 1

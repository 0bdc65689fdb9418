"""L0's encode batcher: concurrent requests share encoder calls, each gets its own rows
back in order, a failure reaches every request of its batch, and a request that stopped
waiting is never encoded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from routermesh.runtime import encode_batcher
from routermesh.runtime.encode_batcher import BatchCost, EncodeBatcher
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


async def test_the_backlog_is_the_running_call_and_the_next_one_at_the_recent_cost() -> None:
    encoder = HeldEncoder()
    batcher = EncodeBatcher(encoder)
    assert batcher.expected_wait() == 0.0  # nothing measured yet: nothing to shed on
    first = asyncio.create_task(batcher.encode(["a", "b"]))
    await _started(encoder)
    queued = [asyncio.create_task(batcher.encode(texts)) for texts in (["c"], ["d", "e"])]
    await asyncio.sleep(0)
    assert (batcher.busy_texts, batcher.queued_texts) == (2, 3)
    # Calls of 1 text in 10 ms and of 4 in 16 ms: 8 ms a call plus 2 ms a text.
    batcher.cost.observe(1, 0.010)
    batcher.cost.observe(4, 0.016)
    assert batcher.cost.line() == (pytest.approx(0.008), pytest.approx(0.002))
    # The running call (8 + 2 x 2 ms) and the next one (8 + 3 x 2 ms).
    assert batcher.expected_wait() == pytest.approx(0.026)
    queued[1].cancel()  # counted until the batcher drops it
    assert batcher.expected_wait() == pytest.approx(0.026)
    encoder.release.set()
    await first
    await queued[0]
    assert (batcher.busy_texts, batcher.queued_texts, batcher.dropped) == (0, 0, 1)
    assert batcher.expected_wait() == 0.0


class Clock:
    """perf_counter for the batcher: each call returns the next reading."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def perf_counter(self) -> float:
        return self.readings.pop(0)


async def test_every_call_is_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    # One text in 10 ms, then four texts in 16 ms.
    monkeypatch.setattr(encode_batcher, "time", Clock(0.0, 0.010, 1.0, 1.016))
    batcher = EncodeBatcher(lambda texts: np.zeros((len(texts), 2), dtype=np.float32))
    await batcher.encode(["a"])
    # One size seen so far: its cost spread over its texts.
    assert batcher.cost.line() == (0.0, pytest.approx(0.010))
    await batcher.encode(["a", "b", "c", "d"])
    assert batcher.cost.line() == (pytest.approx(0.008), pytest.approx(0.002))
    assert batcher.cost.estimate(20) == pytest.approx(0.048)  # not 20 separate calls


def test_a_cost_line_that_would_go_negative_falls_back_to_the_average() -> None:
    cost = BatchCost()
    cost.observe(1, 0.010)
    cost.observe(4, 0.004)  # bigger yet faster (a noisy machine): no negative slope
    fixed, per_text = cost.line()
    assert fixed == 0.0 and per_text == pytest.approx(0.014 / 5, rel=0.05)

"""L0's encoder calls, batched across concurrent requests.

One encoder call runs at a time, on a worker thread; the texts of every request that
arrives meanwhile go into the next call together. A batch of short messages costs little
more than one message, while parallel single calls fight over the same cores
(onnxruntime's own threads times the requests in flight): under load, batching is what
keeps the tail of fresh decisions short. Nothing waits to fill a batch, so a request
alone is encoded at once. A request that stops waiting (its timeout, a client gone) is
dropped before its texts are encoded.

The batcher also knows its backlog: the call running now and the texts queued for the
next one, priced by what its recent calls cost (:class:`BatchCost`: a fixed part per
call plus a part per text, fitted over the recent calls, so a batch of twenty short
messages is not priced as twenty separate calls). :meth:`EncodeBatcher.expected_wait` is
what a request arriving now would wait for its texts; L0 sheds the request (reason
``overload``) when that exceeds its ``maxQueueMs``, instead of queueing behind work it
cannot finish in time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routermesh.runtime.encoder import FloatArray

MAX_BATCH_TEXTS = 64
DECAY = 0.05
"""Weight the newest call takes from the older ones in the cost fit (about the last 20
calls count)."""


class BatchCost:
    """Seconds of an encoder call of ``n`` texts, ``fixed + per_text * n``: a least-squares
    line through the recent calls (exponentially weighted), or, while every recent call
    had the same size, that size's average spread over its texts."""

    def __init__(self) -> None:
        self._weight = self._n = self._seconds = self._nn = self._n_seconds = 0.0

    @property
    def measured(self) -> bool:
        return self._weight > 0

    def observe(self, texts: int, seconds: float) -> None:
        keep = 1 - DECAY
        self._weight = keep * self._weight + 1
        self._n = keep * self._n + texts
        self._seconds = keep * self._seconds + seconds
        self._nn = keep * self._nn + texts * texts
        self._n_seconds = keep * self._n_seconds + texts * seconds

    def line(self) -> tuple[float, float]:
        """(fixed, per_text) seconds; (0, 0) before any call."""
        if not self.measured:
            return 0.0, 0.0
        spread = self._weight * self._nn - self._n * self._n
        if spread > 1e-9 * max(self._weight * self._nn, 1.0):
            per_text = (self._weight * self._n_seconds - self._n * self._seconds) / spread
            fixed = (self._seconds - per_text * self._n) / self._weight
            if per_text >= 0 and fixed >= 0:
                return fixed, per_text
        return 0.0, self._seconds / max(self._n, 1e-9)

    def estimate(self, texts: int) -> float:
        """Seconds of a call of ``texts`` texts (0 for none)."""
        if texts <= 0:
            return 0.0
        fixed, per_text = self.line()
        return fixed + per_text * texts


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[FloatArray]


class EncodeBatcher:
    def __init__(
        self, encode: Callable[[Sequence[str]], FloatArray], max_texts: int = MAX_BATCH_TEXTS
    ) -> None:
        self._encode = encode
        self._max_texts = max_texts
        self._pending: deque[_Pending] = deque()
        self._worker: asyncio.Task[None] | None = None
        self.calls = 0
        """Encoder calls made (each one batch)."""
        self.dropped = 0
        """Requests that stopped waiting before their texts were encoded."""
        self.queued_texts = 0
        """Texts waiting for an encoder call (requests that gave up included until dropped)."""
        self.busy_texts = 0
        """Texts of the call running now."""
        self.cost = BatchCost()
        """What the recent calls cost."""

    def expected_wait(self) -> float:
        """Seconds a request arriving now would wait for its texts: the call running now
        and the next one, which the queued texts join (0 before any call was measured)."""
        return self.cost.estimate(self.busy_texts) + self.cost.estimate(self.queued_texts)

    async def encode(self, texts: Sequence[str]) -> FloatArray:
        """The vectors of ``texts``, in order (one row per text)."""
        future: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(list(texts), future))
        self.queued_texts += len(texts)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._pending:
            head = self._pending[0]
            if head.future.done():  # cancelled while queued: never encoded
                self._pending.popleft()
                self.queued_texts -= len(head.texts)
                self.dropped += 1
                continue
            if batch and size + len(head.texts) > self._max_texts:
                break
            batch.append(self._pending.popleft())
            size += len(head.texts)
        self.queued_texts -= size
        return batch

    async def _drain(self) -> None:
        while batch := self._next_batch():
            flat = [text for item in batch for text in item.texts]
            self.calls += 1
            self.busy_texts = len(flat)
            started = time.perf_counter()
            try:
                vectors = await asyncio.to_thread(self._encode, flat)
            except Exception as error:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            finally:
                self.busy_texts = 0
            self.cost.observe(len(flat), time.perf_counter() - started)
            offset = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(vectors[offset : offset + len(item.texts)])
                offset += len(item.texts)

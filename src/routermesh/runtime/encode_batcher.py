"""L0's encoder calls, batched across concurrent requests.

One encoder call runs at a time, on a worker thread; the texts of every request that
arrives meanwhile go into the next call together. A batch of short messages costs little
more than one message, while parallel single calls fight over the same cores
(onnxruntime's own threads times the requests in flight): under load, batching is what
keeps the tail of fresh decisions short. Nothing waits to fill a batch, so a request
alone is encoded at once. A request that stops waiting (its timeout, a client gone) is
dropped before its texts are encoded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from routermesh.runtime.encoder import FloatArray

MAX_BATCH_TEXTS = 64


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

    async def encode(self, texts: Sequence[str]) -> FloatArray:
        """The vectors of ``texts``, in order (one row per text)."""
        future: asyncio.Future[FloatArray] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(list(texts), future))
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
                self.dropped += 1
                continue
            if batch and size + len(head.texts) > self._max_texts:
                break
            batch.append(self._pending.popleft())
            size += len(head.texts)
        return batch

    async def _drain(self) -> None:
        while batch := self._next_batch():
            flat = [text for item in batch for text in item.texts]
            self.calls += 1
            try:
                vectors = await asyncio.to_thread(self._encode, flat)
            except Exception as error:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            offset = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(vectors[offset : offset + len(item.texts)])
                offset += len(item.texts)

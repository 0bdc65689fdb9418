"""Named asyncio locks that never outlive their event loop."""

from __future__ import annotations

import asyncio


class LoopLocks:
    """One lock per key for the running event loop. A lock of an earlier loop (an operator
    run before in the same process, as in tests) is replaced, never reused: a task
    abandoned there may have left it locked."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}

    def get(self, key: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        held = self._held.get(key)
        if held is None or held[0] is not loop:
            held = self._held[key] = (loop, asyncio.Lock())
        return held[1]

    def forget(self, key: str) -> None:
        self._held.pop(key, None)

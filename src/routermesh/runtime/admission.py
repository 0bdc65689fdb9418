"""In-flight bounds of the model servers: a request takes a free slot or is refused at once.

A llama.cpp server runs ``--parallel`` slots; a request beyond them waits in the
server's queue, and under load that wait is what makes a layer time out after the full
timeout. The cascade therefore never sends a server more requests than it has slots
(``LayerConfig.max_in_flight``): a request that finds them all busy skips the layer
(reason ``overload``) and moves on at once.

The bounds belong to the servers, not to one config: a reload builds a new cascade
while requests of the old one are still in flight, so :class:`SlotBook` hands both
cascades the same :class:`Slots` for the same server URL.
"""

from __future__ import annotations


class Slots:
    """Requests in flight to one model server, at most ``limit``; never waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    def take(self) -> bool:
        """Take a slot; False (nothing taken) when all are busy. Needs no lock: the event
        loop runs one coroutine at a time and this never awaits."""
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def give_back(self) -> None:
        self.busy = max(0, self.busy - 1)


class SlotBook:
    """The :class:`Slots` of each model server, by URL, kept across config reloads."""

    def __init__(self) -> None:
        self._servers: dict[str, Slots] = {}

    def for_server(self, url: str, limit: int) -> Slots:
        """The slots of the server at ``url``, with the newest config's ``limit`` (the
        requests already in flight keep counting)."""
        slots = self._servers.get(url)
        if slots is None:
            slots = self._servers[url] = Slots(limit)
        slots.limit = limit
        return slots

"""Feedback from an agent's tool calls through ``/mcp`` (``api.learnFromToolCalls``).

When the router is not sure of a request, ``/mcp``'s ``route`` tool (or a ``tools/list``
that names the request in its ``_meta``) escalates it and offers the tools of the few
routes L0 ranked highest. An agent that then calls the tools
of exactly one of those routes has told the router which server the request belongs to,
as a reasoning endpoint does with ``X-Router-Expected-Route``: that is recorded as a
report (expected route: the called one; decided: the escalation route), so L0 learns the
request as the agent worded it at its next refresh.

What counts, and why:

- only escalations without a plan and with every layer's route served: a multi-step
  escalation's agent may do one part now and the rest later or itself, and learning the
  request as one server's would stop it being split; a request escalated because its
  route's server is down sends the agent to another server, which is no lesson; a
  routed decision offers one route's tools, so a call says nothing new;
- only the offered routes, and only calls started while the request was the session's
  open one: a call to another route's tool comes from an older tool list, and a call
  that was sent for an earlier request belongs to that one;
- one route called: calls to two or more routes mean the request needed several servers
  (nothing is learned), and no call means the agent did the work itself or gave up (no
  server to learn: the escalation route is learned only from a reasoning endpoint's
  word);
- a request settles ``SETTLE_SECONDS`` after the answer, or earlier when the session
  asks for another (``route``, or ``tools/list`` with a message): one conversation per
  session is assumed;
- the setting is read when the request opens and again when it settles (it reloads live);
- the report carries no layer verdicts: requests the agent served without any server
  are never reported, so these reports would only ever move adaptive thresholds down.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace

from routermesh.runtime.cascade import Decision
from routermesh.runtime.feedback import MAX_STORED_CHARS

SETTLE_SECONDS = 120.0
"""How long after the router's answer the agent's tool calls count for the request."""
MAX_PENDING = 10_000
"""Requests awaiting their outcome (the oldest is dropped first, unreported)."""

Report = Callable[[str, str, Decision], Coroutine[object, object, bool]]
"""Records ``(message, called route, decision)`` as feedback; True when it was stored."""
Outcome = Callable[[str], None]
"""Counts how an open request ended (``reported``, ``refused``, ``several_routes``,
``no_call``, ``switched_off``, ``dropped``)."""


@dataclass(eq=False)
class Pending:
    """One session's open request: what the agent was offered and what it called."""

    session: str
    message: str
    decision: Decision
    offered: tuple[str, ...]
    called: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class ToolCallFeedback:
    """Per agent session: the last escalated request's offered routes and the routes
    whose tools the agent called for it; ``enabled`` is the live setting."""

    def __init__(
        self,
        enabled: Callable[[], bool],
        report: Report,
        outcome: Outcome,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._enabled = enabled
        self._report = report
        self._outcome = outcome
        self._settle_seconds = settle_seconds
        self._max_pending = max_pending
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._reports: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def routed(
        self,
        session: str,
        message: str,
        decision: Decision,
        offered: tuple[str, ...],
        escalation: str,
    ) -> None:
        """A new request of ``session`` was answered: settles its previous one, then
        follows this one when the router was unsure of it."""
        self.settle(session)
        if decision.route != escalation or decision.plan or decision.unavailable or not offered:
            return
        if not self._enabled():
            return
        pending = Pending(
            session,
            message[:MAX_STORED_CHARS],
            replace(decision, trace=()),  # the report reads none of it
            offered,
        )
        pending.timer = asyncio.get_running_loop().call_later(
            self._settle_seconds, self._settle_pending, pending
        )
        self._pending[session] = pending
        while len(self._pending) > self._max_pending:
            _, dropped = self._pending.popitem(last=False)
            self._close(dropped, "dropped")

    def open(self, session: str) -> Pending | None:
        """``session``'s open request, taken when a tool call starts (the call may end
        after the session has moved on)."""
        return self._pending.get(session)

    def called(self, pending: Pending | None, route: str) -> None:
        """A tool call of ``route`` that started while ``pending`` was open reached its
        server."""
        if pending is None or self._pending.get(pending.session) is not pending:
            return  # settled, or never followed
        if route in pending.offered:
            pending.called.add(route)

    def settle(self, session: str) -> None:
        """Close ``session``'s open request now: report it when one route's tools were
        called."""
        pending = self._pending.get(session)
        if pending is not None:
            self._settle_pending(pending)

    def _settle_pending(self, pending: Pending) -> None:
        if self._pending.get(pending.session) is not pending:
            return
        del self._pending[pending.session]
        if len(pending.called) != 1:
            self._close(pending, "no_call" if not pending.called else "several_routes")
            return
        if not self._enabled():
            self._close(pending, "switched_off")
            return
        self._close(pending, None)
        (route,) = pending.called
        task = asyncio.get_running_loop().create_task(self._send(pending, route))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _send(self, pending: Pending, route: str) -> None:
        stored = await self._report(pending.message, route, pending.decision)
        self._outcome("reported" if stored else "refused")

    def _close(self, pending: Pending, outcome: str | None) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        if outcome is not None:
            self._outcome(outcome)

    async def close(self) -> None:
        """Wait for the reports under way; requests still open are dropped (the pod is
        going)."""
        for pending in self._pending.values():
            self._close(pending, "dropped")
        self._pending.clear()
        if self._reports:
            await asyncio.gather(*self._reports, return_exceptions=True)

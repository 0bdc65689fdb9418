"""What an agent's tool calls through /mcp teach the router (runtime/mcp_feedback.py): the
one route whose tools it called after an unsure answer, and nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routermesh.runtime.cascade import Decision
from routermesh.runtime.decision import Reason
from routermesh.runtime.mcp_feedback import ToolCallFeedback

OFFERED = ("proxmox", "unifi", "grafana")


def unsure(plan: tuple[str, ...] = (), unavailable: str | None = None) -> Decision:
    reason = Reason.MULTI_STEP if plan else Reason.LOW_CONFIDENCE
    if unavailable:
        reason = Reason.TARGET_UNAVAILABLE
    return Decision(
        "cortex",
        "escalated",
        0.42,
        "hash",
        escalation_reason=reason,
        plan=plan,
        unavailable=unavailable,
    )


class Recorder:
    def __init__(self, enabled: bool = True, stores: bool = True) -> None:
        self.enabled = enabled
        self.stores = stores
        self.reports: list[tuple[str, str, Decision]] = []
        self.outcomes: list[str] = []
        self.counted = asyncio.Event()

    async def report(self, message: str, route: str, decision: Decision) -> bool:
        self.reports.append((message, route, decision))
        return self.stores

    def outcome(self, name: str) -> None:
        self.outcomes.append(name)
        self.counted.set()

    def feedback(self, **kwargs: Any) -> ToolCallFeedback:
        return ToolCallFeedback(lambda: self.enabled, self.report, self.outcome, **kwargs)


def call(feedback: ToolCallFeedback, session: str, route: str) -> None:
    """A tool call of ``route`` that starts and reaches its server at once."""
    feedback.called(feedback.open(session), route)


@pytest.mark.asyncio
async def test_one_offered_route_called_is_reported_when_the_next_request_settles_it() -> None:
    recorder = Recorder()
    feedback = recorder.feedback()
    decision = unsure()
    feedback.routed("s1", "force stop vm 144 its hung", decision, OFFERED, "cortex")
    call(feedback, "s1", "proxmox")
    call(feedback, "s1", "proxmox")
    assert recorder.reports == [] and feedback.pending == 1
    feedback.routed("s1", "which alerts are firing", unsure(), OFFERED, "cortex")
    await asyncio.wait_for(recorder.counted.wait(), 5)
    ((message, route, reported),) = recorder.reports
    assert (message, route) == ("force stop vm 144 its hung", "proxmox")
    assert (reported.route, reported.escalation_reason) == ("cortex", Reason.LOW_CONFIDENCE)
    assert recorder.outcomes == ["reported"]
    assert feedback.pending == 1  # the second request waits for its own calls


@pytest.mark.asyncio
async def test_a_request_settles_by_itself_after_the_answer() -> None:
    recorder = Recorder()
    feedback = recorder.feedback(settle_seconds=0.05)
    feedback.routed("s1", "drop the tx power on the hallway ap", unsure(), OFFERED, "cortex")
    call(feedback, "s1", "unifi")
    await asyncio.wait_for(recorder.counted.wait(), 5)
    assert [(m, r) for m, r, _ in recorder.reports] == [
        ("drop the tx power on the hallway ap", "unifi")
    ]
    assert recorder.outcomes == ["reported"] and feedback.pending == 0
    # one without any call settles the same way, as no_call
    recorder.counted.clear()
    feedback.routed("s2", "whats the weather tomorrow", unsure(), OFFERED, "cortex")
    await asyncio.wait_for(recorder.counted.wait(), 5)
    assert recorder.outcomes == ["reported", "no_call"] and feedback.pending == 0


@pytest.mark.asyncio
async def test_calls_to_two_routes_teach_nothing() -> None:
    recorder = Recorder()
    feedback = recorder.feedback()
    feedback.routed("s1", "is the nas slow because of the vm", unsure(), OFFERED, "cortex")
    call(feedback, "s1", "proxmox")
    call(feedback, "s1", "grafana")
    feedback.settle("s1")
    assert recorder.reports == [] and recorder.outcomes == ["several_routes"]


@pytest.mark.asyncio
async def test_calls_outside_the_offer_or_sent_for_an_earlier_request_teach_nothing() -> None:
    recorder = Recorder()
    feedback = recorder.feedback()
    feedback.routed("s1", "restart the office ap", unsure(), OFFERED, "cortex")
    started = feedback.open("s1")  # a call sent for the first request...
    call(feedback, "s1", "elastic")  # (an older tool list's route, not offered)
    feedback.routed("s1", "snapshot the postgres vm", unsure(), OFFERED, "cortex")
    feedback.called(started, "unifi")  # ...that ends after the second one was asked
    feedback.settle("s1")
    assert recorder.reports == [] and recorder.outcomes == ["no_call", "no_call"]


@pytest.mark.asyncio
async def test_routed_multi_step_and_unavailable_decisions_are_not_followed() -> None:
    recorder = Recorder()
    feedback = recorder.feedback()
    routed = Decision("proxmox", "l0", 0.93, "hash")
    feedback.routed("s1", "start vm 101", routed, ("proxmox",), "cortex")
    plan = unsure(plan=("unifi", "proxmox"))
    feedback.routed("s2", "check network and spin up test VM", plan, plan.plan, "cortex")
    feedback.routed("s3", "pve2 is down", unsure(), (), "cortex")  # nothing offered
    # its route's server is down: the agent goes to another server, which is no lesson
    down = unsure(unavailable="proxmox")
    feedback.routed("s4", "force stop vm 144", down, OFFERED, "cortex")
    assert feedback.pending == 0
    for session in ("s1", "s2", "s3", "s4"):
        call(feedback, session, "unifi")
        feedback.settle(session)
    assert recorder.reports == [] and recorder.outcomes == []


@pytest.mark.asyncio
async def test_the_switch_is_read_when_a_request_opens_and_when_it_settles() -> None:
    recorder = Recorder(enabled=False)
    feedback = recorder.feedback()
    feedback.routed("s1", "force stop vm 144 its hung", unsure(), OFFERED, "cortex")
    assert feedback.pending == 0
    recorder.enabled = True
    feedback.routed("s1", "force stop vm 144 its hung", unsure(), OFFERED, "cortex")
    call(feedback, "s1", "proxmox")
    recorder.enabled = False  # switched off while the request was open
    feedback.settle("s1")
    assert recorder.reports == [] and recorder.outcomes == ["switched_off"]


@pytest.mark.asyncio
async def test_a_report_the_store_refused_is_counted_as_refused() -> None:
    recorder = Recorder(stores=False)
    feedback = recorder.feedback()
    feedback.routed("s1", "force stop vm 144 its hung", unsure(), OFFERED, "cortex")
    call(feedback, "s1", "proxmox")
    feedback.settle("s1")
    await feedback.close()  # waits for the report under way
    assert len(recorder.reports) == 1 and recorder.outcomes == ["refused"]


@pytest.mark.asyncio
async def test_the_oldest_open_request_is_dropped_past_the_cap_and_close_drops_the_rest() -> None:
    recorder = Recorder()
    feedback = recorder.feedback(max_pending=1)
    feedback.routed("s1", "first", unsure(), OFFERED, "cortex")
    started = feedback.open("s1")
    feedback.routed("s2", "second", unsure(), OFFERED, "cortex")
    assert recorder.outcomes == ["dropped"] and feedback.pending == 1
    feedback.called(started, "unifi")  # s1 was forgotten: nothing to follow
    await feedback.close()
    assert recorder.reports == [] and recorder.outcomes == ["dropped", "dropped"]
    assert feedback.pending == 0

"""Multi-step requests: a message whose parts belong to different routes.

"check the network and spin up a test VM" needs two tool servers; routing it to
either one does half the job, so it escalates (reason ``multi_step``) with the
routes it needs, in order, as its ``plan``. The message is cut into clauses at the
words and punctuation people join tasks with ("and", "then", "after that", commas,
semicolons, "before", ...); L0 judges each clause like a message, and when at least
two clauses go confidently to different routes the request is multi-step.

A clause that goes nowhere confidently ("from node exporter") changes nothing, one
request that merely mentions two things of one server ("the cpu and memory graphs")
stays one route, and a message L0 is very sure of as a whole is not split at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_JOINS = (
    r"\s*[;,]\s*(?:and\s+then|and|then|also|after\s+that|afterwards|plus)?\s*",
    r"\.\s+(?:and\s+)?(?:then|also|after\s+that|afterwards)?\s*",
    r"\s+and\s+then\s+",
    r"\s+and\s+also\s+",
    r"\s+(?:then|also|afterwards|plus)\s+",
    r"\s+after\s+that\s+",
    r"\s+as\s+well\s+as\s+",
    r"\s+(?:before|after|once|ahead\s+of)\s+",
    r"\s+and\s+",
    r"\s*&\s*",
)
_SPLIT = re.compile("|".join(f"(?:{join})" for join in _JOINS), re.IGNORECASE)
_LEADING = re.compile(r"^(?:if|when|once|before|after|then|and|also|so|please)\s+", re.IGNORECASE)
MIN_CLAUSE_WORDS = 2
MAX_CLAUSES = 4
"""Clauses judged per message (the encoder's cost grows with each)."""
MAX_SPLIT_CHARS = 400
"""Longer messages are not split: their clauses are paragraphs, not tasks."""


def clauses(message: str) -> list[str]:
    """The message's clauses of at least two words (none or one: not splittable)."""
    if len(message) > MAX_SPLIT_CHARS:
        return []
    parts = []
    for part in _SPLIT.split(" ".join(message.split())):
        clause = _LEADING.sub("", part.strip(" .,;?!"))
        if len(clause.split()) >= MIN_CLAUSE_WORDS:
            parts.append(clause)
    return parts[:MAX_CLAUSES] if len(parts) >= 2 else []


@dataclass(frozen=True)
class ClauseRoute:
    """One clause's route and confidence (L0's judgement of the clause alone)."""

    clause: str
    route: str
    confidence: float


def plan_of(judged: Sequence[ClauseRoute], threshold: float, escalation_route: str) -> list[str]:
    """The routes of the clauses judged at least ``threshold``, in order, once each: a
    plan when two or more (the escalation route is not a step)."""
    plan: list[str] = []
    for item in judged:
        confident = item.confidence >= threshold and item.route != escalation_route
        if confident and item.route not in plan:
            plan.append(item.route)
    return plan if len(plan) >= 2 else []

"""Multi-step requests: a message whose parts belong to different routes.

"check the network and spin up a test VM" needs two tool servers; routing it to
either one does half the job, so it escalates (reason ``multi_step``) with the
routes it needs, in order, as its ``plan``. The message is cut into clauses at the
words and punctuation people join tasks with ("and", "then", "after that", commas,
semicolons, "before", ...); L0 judges each clause like a message, and when at least
two clauses go to different routes the request is multi-step: one of them with the
layer's multi-step threshold, the other with that or, when a joining word ties it to
the message ("..., after that reboot the core switch") and its route is among the
message's best few, with the lower joined threshold. A second task is usually said
in few words and judged unsure alone; a comma or a sentence break without such a
word is more often context ("I just landed in Paris. Find a hotel") than a task.

A clause that goes nowhere confidently ("from node exporter") changes nothing, one
request that merely mentions two things of one server ("the cpu and memory graphs")
stays one route, and a message L0 is very sure of as a whole is not split at all.

A clause that goes to the escalation route (its examples are nearest, requests the
reasoning endpoint handled itself among them once reported) is a task no server
takes: beside a server's task the message needs both, so it escalates too, with the
server alone as its plan.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
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
_JOINING_WORD = re.compile(
    r"\b(?:and|then|also|after|afterwards|plus|before|once|ahead|as\s+well\s+as)\b|&",
    re.IGNORECASE,
)
"""Words that join a task to the one before (the joins above, less bare punctuation)."""
_SEQUENCING = re.compile(
    r"\b(?:then|after\s+that|afterwards|also|plus|as\s+well\s+as)\b|;", re.IGNORECASE
)
"""Joins that say a next task follows: the last place a long message is cut."""
_JOINING_LEAD = re.compile(r"^(?:if|when|once|before|after|then|and|also)\s", re.IGNORECASE)
"""Words a clause that is a task of its own may begin with ("if the backup failed, ...")."""
MIN_CLAUSE_WORDS = 2
MAX_CLAUSES = 4
"""Clauses judged per message (the encoder's cost grows with each)."""
MAX_SPLIT_CHARS = 400
"""Longer messages are not split: their clauses are paragraphs, not tasks."""
JOINED_CANDIDATES = 3
"""A joined clause counts at the lower threshold only for one of the message's best few
routes: a second task is one the message as a whole already points at."""


@dataclass(frozen=True)
class Clause:
    """One clause of a message; ``joined``: a joining word ties it to its neighbours."""

    text: str
    joined: bool


def clauses(message: str) -> list[Clause]:
    """The message's clauses of at least two words (none or one: not splittable).

    A message with more clauses than are judged is cut only at its strongest joins
    (sequencing words, then other joining words, then punctuation; earlier first), so
    a second request after a long first one ("... and it should have laundry service;
    after that find the factorial of 5") is still one of the clauses."""
    if len(message) > MAX_SPLIT_CHARS:
        return []
    text = " ".join(message.split())
    parts: list[str] = []
    joins: list[str] = []
    start = 0
    for join in _SPLIT.finditer(text):
        parts.append(text[start : join.start()])
        joins.append(join.group(0))
        start = join.end()
    parts.append(text[start:])
    found = _cut(parts, joins, set(range(len(joins))))
    if len(found) > MAX_CLAUSES:
        strongest = sorted(range(len(joins)), key=lambda i: (-_strength(joins[i]), i))
        found = _cut(parts, joins, set(strongest[: MAX_CLAUSES - 1]))
    return found[:MAX_CLAUSES] if len(found) >= 2 else []


def _strength(join: str) -> int:
    if _SEQUENCING.search(join):
        return 2
    return 1 if _JOINING_WORD.search(join) else 0


def _cut(parts: list[str], joins: list[str], cuts: set[int]) -> list[Clause]:
    """The clauses of ``parts`` cut at the joins numbered in ``cuts`` (the others kept
    inside their clause)."""
    found: list[Clause] = []
    piece, before = "", ""
    for i, part in enumerate(parts):
        piece += part
        after = joins[i] if i < len(joins) else ""
        if i < len(joins) and i not in cuts:
            piece += after
            continue
        clause = _LEADING.sub("", piece.strip(" .,;?!"))
        if len(clause.split()) >= MIN_CLAUSE_WORDS:
            tied = _JOINING_WORD.search(f"{before} {after}") or _JOINING_LEAD.match(piece.strip())
            found.append(Clause(clause, bool(tied)))
        piece, before = "", after
    return found


@dataclass(frozen=True)
class ClauseRoute:
    """One clause's route and confidence (L0's judgement of the clause alone)."""

    clause: str
    route: str
    confidence: float
    joined: bool = False


def plan_of(
    judged: Sequence[ClauseRoute],
    threshold: float,
    escalation_route: str,
    *,
    joined_threshold: float | None = None,
    candidates: Collection[str] = (),
) -> list[str]:
    """The steps of the clauses that count, in order, once each: a plan when two or more
    and a server's clause is judged at least ``threshold``. A clause counts at
    ``threshold``, or at ``joined_threshold`` when it is joined by a word and its route
    is one of the message's ``candidates``. The escalation route is a step too, one no
    server takes; a sure server task must stand beside it, since an unsure one was as
    likely part of the request the reasoning endpoint takes whole."""
    plan: list[str] = []
    confident = False
    for item in judged:
        sure = item.confidence >= threshold
        weak = (
            joined_threshold is not None
            and item.joined
            and item.route in candidates
            and item.confidence >= joined_threshold
        )
        confident = confident or (sure and item.route != escalation_route)
        if (sure or weak) and item.route not in plan:
            plan.append(item.route)
    return plan if len(plan) >= 2 and confident else []

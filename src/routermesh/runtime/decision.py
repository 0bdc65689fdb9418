"""The pluggable layer interface of the cascade and the vocabulary of decisions.

Every layer (cache aside) is a :class:`Classifier`: given a message it returns a
:class:`Verdict`, a route with a calibrated confidence, or an abstention with the
reason. Layers never raise for model trouble and never apply thresholds: the
cascade compares the confidence with the layer's (or the route's) threshold and
escalates on abstention, so a new kind of layer (an embedding classifier, a
routing head) plugs in beside the generative ones without touching the cascade.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

DecidingLayer = Literal["cache", "l1", "l2", "escalated"]
"""The ``layer`` values of the seed's cascade; a pluggable layer adds its own name."""


class Reason(StrEnum):
    """Why a layer did not route (metered as ``router_escalations_total{reason}``,
    ``router_layer_errors_total{layer,reason}`` and, for a layer the cascade did not ask,
    ``router_layer_skipped_total{layer,reason}``)."""

    LOW_CONFIDENCE = "low_confidence"
    DISAGREEMENT = "disagreement"
    """The layer's route is not the top route of the layer it must agree with
    (``LayerConfig.agree_with``): a steered or confused answer steps aside."""
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    HTTP_ERROR = "http_error"
    PARSE_ERROR = "parse_error"
    INVALID_LABEL = "invalid_label"
    LAYER_ERROR = "layer_error"
    """A layer raised instead of abstaining (a bug): metered, and the cascade goes on."""
    CHOSE_ESCALATION = "chose_escalation"
    OUT_OF_SCOPE = "out_of_scope"
    """No route handles the message: it is far from every route's evidence, or a judge
    said none of the candidates does."""
    MULTI_STEP = "multi_step"
    """The message needs several routes (its ``plan``): one tool server would do half. A
    plan of one server: the rest is a task no server takes (the reasoning endpoint's)."""
    CACHED = "cached"
    """A cached escalation (all layers were unsure of this message before)."""
    NO_LAYER = "no_layer"
    NO_CANDIDATES = "no_candidates"
    """A judge layer had no ranking from L0 and the table is larger than it judges at once."""
    DISABLED = "disabled"
    INTERNAL_ERROR = "internal_error"
    """The decision path itself raised outside the layers (a bug in the cache, the
    cascade or the answer's building): the request fails open to the escalation route."""
    UNREACHABLE_THRESHOLD = "unreachable_threshold"
    """Not asked: even its highest calibrated confidence is below the threshold of every
    route it could answer, so its answer could never decide."""
    OVERLOAD = "overload"
    """Not asked: every slot of the layer's model server was busy (``max_in_flight``
    requests in flight); the request moved on at once instead of queueing."""
    TARGET_UNAVAILABLE = "target_unavailable"
    """The chosen route's MCP server does not answer (its health checks fail) and the
    route has no fallback route that does: the request escalates instead."""
    BUDGET = "budget"
    """Not asked: earlier layers spent the request's time budget (the largest timeout of
    the cascade's layers)."""

    @property
    def is_error(self) -> bool:
        return self in _ERRORS

    @property
    def is_failure(self) -> bool:
        """The layer could not give its view this time (an error, a busy server, no time
        left): an escalation after it is cached only briefly, so it is asked again soon."""
        return self in _ERRORS or self in _TRANSIENT_SKIPS


_ERRORS = frozenset(
    {
        Reason.TIMEOUT,
        Reason.CONNECTION_ERROR,
        Reason.HTTP_ERROR,
        Reason.PARSE_ERROR,
        Reason.INVALID_LABEL,
        Reason.LAYER_ERROR,
    }
)
_TRANSIENT_SKIPS = frozenset({Reason.OVERLOAD, Reason.BUDGET})


@dataclass(frozen=True)
class Candidate:
    """A route an earlier layer ranked high for a message, with the route's evidence
    nearest to it: what a judge layer chooses among."""

    route: str
    example: str = ""


@dataclass(frozen=True)
class Verdict:
    """A layer's answer: ``route`` with ``confidence`` in [0, 1], or an abstention.

    ``route`` may be the escalation route: the layer says the message must escalate,
    and ``cause`` says why (``out_of_scope``, ``multi_step`` with the routes in
    ``plan``). ``out_of_scope`` is the layer's probability that no route handles the
    message (None when it has no such view); ``candidates`` rank routes for later
    layers. ``decisive``: the layer applied its own test (multi-step detection), so the
    cascade takes the verdict without comparing it with a threshold. ``head``: the layer
    answered with its trained head, so the head's own threshold and calibration apply
    where configured.
    """

    route: str | None
    confidence: float
    reason: Reason | None = None
    cause: Reason | None = None
    plan: tuple[str, ...] = ()
    out_of_scope: float | None = None
    candidates: tuple[Candidate, ...] = ()
    decisive: bool = False
    head: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside [0, 1]")
        if (self.route is None) == (self.reason is None):
            raise ValueError("a verdict has a route or an abstention reason, not both")
        if self.cause is not None and self.route is None:
            raise ValueError("only a verdict that escalates has a cause")
        if self.out_of_scope is not None and not 0.0 <= self.out_of_scope <= 1.0:
            raise ValueError(f"out_of_scope {self.out_of_scope} is outside [0, 1]")

    @classmethod
    def abstain(cls, reason: Reason, confidence: float = 0.0) -> Verdict:
        return cls(route=None, confidence=confidence, reason=reason)


@runtime_checkable
class Classifier(Protocol):
    """One layer of the cascade."""

    @property
    def name(self) -> str:
        """Layer name as in the config and in metric labels (``l1``, ``l2``, ...)."""
        ...

    async def classify(self, message: str) -> Verdict:
        """Choose a route for ``message``; abstain (never raise) on any model trouble."""
        ...

    async def ready(self) -> bool:
        """Whether the layer can answer now (its model server is up and warm): ``/readyz``."""
        ...

    async def warm(self) -> None:
        """Prepare for traffic after a config load (fill a model server's prompt cache);
        never raises."""
        ...


@runtime_checkable
class Judge(Protocol):
    """A layer that can choose among the candidates an earlier layer ranked (the
    generative layers): its prompt stays bounded whatever the table's size."""

    async def judge(self, message: str, candidates: tuple[Candidate, ...]) -> Verdict:
        """Choose one of ``candidates``, none of them, or several; never raises."""
        ...


@runtime_checkable
class Sheddable(Protocol):
    """A layer that knows, before it is asked, that it is too busy to answer in time (L0's
    encoder backlog): the cascade skips it (reason ``overload``) instead of queueing."""

    def saturated(self) -> bool:
        """Whether a message asked now would wait longer than the layer allows; never
        raises, never waits."""
        ...


@runtime_checkable
class Preparable(Protocol):
    async def prepare(self) -> None:
        """Heavy set-up before the layer serves; never raises (a failure makes it abstain)."""
        ...


@runtime_checkable
class Learning(Protocol):
    """A layer that turns reports (misroutes, escalation-route reports) into examples."""

    learned: tuple[tuple[str, str], ...]

    @property
    def learned_version(self) -> str: ...

    async def learn(self) -> bool:
        """Rebuild with the newest feedback if it changed; True when it did. Never raises."""
        ...

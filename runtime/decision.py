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
    """Why a layer did not route (metered as ``router_escalations_total{reason}`` and
    ``router_layer_errors_total{layer,reason}``)."""

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
    CACHED = "cached"
    """A cached escalation (all layers were unsure of this message before)."""
    NO_LAYER = "no_layer"
    DISABLED = "disabled"

    @property
    def is_error(self) -> bool:
        return self in _ERRORS


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


@dataclass(frozen=True)
class Verdict:
    """A layer's answer: ``route`` with ``confidence`` in [0, 1], or an abstention."""

    route: str | None
    confidence: float
    reason: Reason | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside [0, 1]")
        if (self.route is None) == (self.reason is None):
            raise ValueError("a verdict has a route or an abstention reason, not both")

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
class Preparable(Protocol):
    async def prepare(self) -> None:
        """Heavy set-up before the layer serves; never raises (a failure makes it abstain)."""
        ...


@runtime_checkable
class Learning(Protocol):
    """A layer that turns reported misroutes into examples (the feedback loop)."""

    learned: tuple[tuple[str, str], ...]

    @property
    def learned_version(self) -> str: ...

    async def learn(self) -> bool:
        """Rebuild with the newest feedback if it changed; True when it did. Never raises."""
        ...

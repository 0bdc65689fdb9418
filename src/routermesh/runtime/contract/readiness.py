"""What a router pod answers on ``/readyz``: the orchestrator writes it, the operator's
probe reads it (the pod's config hash for ConfigApplied, thresholds and the head for the
RouterMesh status). Unknown fields are ignored, so pods and operators of neighbouring
versions still read each other during a rollout."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)


class _Report(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ThresholdReport(_Report):
    """An adaptive layer's threshold as the pod currently applies it."""

    configured: float
    threshold: float
    state: Literal["configured", "adapted", "rolled_back"]
    samples: int = Field(ge=0)
    accuracy: float | None = None
    reason: str = ""
    updates: int = Field(default=0, ge=0)


class HeadReport(_Report):
    """L0's trained head as the pod sees it on the models volume."""

    state: Literal["loaded", "pending", "stale", "invalid"]
    path: str | None = None
    mode: str | None = None
    """``head`` or ``encoder`` (a string: a newer pod's mode does not drop the report)."""
    holdout_accuracy: float | None = None
    error: str | None = None
    digest: str | None = None
    trained_examples: int | None = None
    train_seconds: float | None = None
    generic_rows: int | None = None
    """Generic requests a tuned encoder learned (``head.generic_requests``)."""


class McpReport(_Report):
    """A route's MCP server as the pod sees it: its tools and whether it answers."""

    url: str = ""
    discovery: bool = True
    health: bool = True
    available: bool = True
    server: str | None = None
    """``name version`` from the server's initialize answer."""
    tools: int = Field(default=0, ge=0)
    """Tools in use (after the caps)."""
    tool_names: list[str] = Field(default_factory=list)
    """The first of them, by name."""
    listed: int = Field(default=0, ge=0)
    """Entries the server listed, before the caps."""
    refreshed_at: str | None = None
    """When the tool list in use was read (RFC 3339, UTC)."""
    last_error: str | None = None
    notes: list[str] = Field(default_factory=list)
    """What the caps cut (too many tools, too much text, malformed entries)."""


class ReadinessReport(_Report):
    ready: bool
    checks: dict[str, bool]
    """``config`` and one entry per enabled layer: True when it can answer."""
    degraded: list[str] = Field(default_factory=list)
    """Dependencies down while a fallback serves (``cache``: Redis); never unready."""
    config_hash: str | None = None
    """The hash of the config the pod routes with; None before one is loaded."""
    config_error: str | None = None
    """Why the last config pushed to the pod was refused (it keeps the previous one)."""
    problems: dict[str, str] = Field(default_factory=dict)
    """Why a layer cannot serve, by layer."""
    learned: dict[str, int] = Field(default_factory=dict)
    """Reports each layer learned as examples (misroutes, escalation-route reports)."""
    thresholds: dict[str, ThresholdReport] = Field(default_factory=dict)
    heads: dict[str, HeadReport] = Field(default_factory=dict)
    mcp: dict[str, McpReport] = Field(default_factory=dict)
    """The routes' MCP servers, by route."""

    @field_validator("thresholds", "heads", "mcp", mode="before")
    @classmethod
    def _drop_unreadable_entries(cls, value: Any, info: ValidationInfo) -> Any:
        """An entry of a shape this version does not know (a neighbouring pod version) is
        dropped, so it never hides the rest of the report."""
        if not isinstance(value, dict):
            return {}
        models: dict[str, type[_Report]] = {"thresholds": ThresholdReport, "heads": HeadReport}
        model = models.get(info.field_name or "", McpReport)
        kept = {}
        for name, entry in value.items():
            try:
                kept[name] = model.model_validate(entry)
            except ValidationError:
                continue
        return kept

    @property
    def learned_total(self) -> int:
        return sum(self.learned.values())

"""Labelled requests: a JSONL file of messages and what should happen to each.

One object per line, as ``router-mesh check --eval`` and the benchmarks read them::

    {"text": "show me connected clients", "route": "unifi"}
    {"text": "what's the weather tomorrow", "route": "__escalate__"}
    {"text": "check network and spin up test VM", "route": "__escalate__",
     "kind": "multi_step", "routes": ["unifi", "proxmox"]}

``route`` is a route's name (dataset labels such as ``credit_cards`` are mapped to route
names) or ``__escalate__``; ``kind`` is ``in_scope`` (the default for a route),
``out_of_scope`` (the default for ``__escalate__``: no route handles it) or
``multi_step`` (it needs the routes of ``routes``, in order; both of the last escalate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from routermesh.runtime.contract.config import ESCALATE_ROUTE, route_name_from_label

Kind = Literal["in_scope", "out_of_scope", "multi_step"]
KINDS: tuple[Kind, ...] = ("in_scope", "out_of_scope", "multi_step")


class LabelledError(ValueError):
    """A file of labelled requests that cannot be read: names the file and line."""


class LabelledRequest(BaseModel):
    """One labelled request (unknown keys are kept out, not refused)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    text: str = Field(min_length=1)
    route: str = Field(min_length=1)
    kind: Kind
    routes: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") is None:
            escalates = data.get("route") == ESCALATE_ROUTE
            return {**data, "kind": "out_of_scope" if escalates else "in_scope"}
        return data

    @model_validator(mode="after")
    def _kind_fits_route(self) -> LabelledRequest:
        if self.kind == "in_scope" and self.route == ESCALATE_ROUTE:
            raise ValueError(f"an in_scope request needs a route, not {ESCALATE_ROUTE}")
        return self

    @property
    def route_name(self) -> str:
        """The route as a route name ("" when the request escalates)."""
        return "" if self.route == ESCALATE_ROUTE else route_name_from_label(self.route)

    @property
    def plan(self) -> tuple[str, ...]:
        return tuple(route_name_from_label(route) for route in self.routes)


def read_labelled(path: Path) -> list[LabelledRequest]:
    """Every request of ``path``; a :class:`LabelledError` naming the line on bad input."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise LabelledError(f"{path}: {error.strerror or error}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(LabelledRequest.model_validate(json.loads(line)))
        except json.JSONDecodeError as error:
            raise LabelledError(f"{path}:{number}: invalid JSON: {error.msg}") from None
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in problem['loc']) or 'row'}: {problem['msg']}"
                for problem in error.errors()
            )
            raise LabelledError(f"{path}:{number}: {problems}") from None
    if not rows:
        raise LabelledError(f"{path}: no requests")
    return rows

"""One benchmark observation per eval row, as written to ``records.jsonl``.

A record holds the gold label, the cascade's decision and, for every layer that
was asked, its verdict: the quality metrics and the threshold calibration are
pure functions of a list of records, so they can be recomputed (and tested)
without running any model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class LayerVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: str
    route: str | None
    confidence: float
    reason: str | None = None
    cause: str | None = None
    plan: tuple[str, ...] = ()
    out_of_scope: float | None = None
    head: bool = False
    """L0's trained head answered (records of older runs: false)."""
    ms: float = 0.0


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    gold: str
    """The route the row is labelled with; the escalation route for out-of-scope rows."""
    in_scope: bool
    kind: str = ""
    """``in_scope``, ``out_of_scope`` or ``multi_step`` (empty in records of older runs:
    ``in_scope`` tells)."""
    gold_plan: tuple[str, ...] = ()
    """The routes a multi-step row needs."""
    route: str
    """The route the cascade decided."""
    layer: str
    """The deciding layer: a layer name, ``cache`` or ``escalated``."""
    confidence: float
    escalation_reason: str | None = None
    plan: tuple[str, ...] = ()
    trace: tuple[LayerVerdict, ...] = ()
    latency_ms: float = 0.0
    """Cascade time reported by the orchestrator."""
    client_ms: float = 0.0
    """End-to-end time seen by the HTTP client."""

    @property
    def correct(self) -> bool:
        return self.route == self.gold

    @property
    def row_kind(self) -> str:
        return self.kind or ("in_scope" if self.in_scope else "out_of_scope")

    def verdict(self, layer: str) -> LayerVerdict | None:
        for verdict in self.trace:
            if verdict.layer == layer:
                return verdict
        return None


def write_records(path: Path, records: Iterable[Record]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json() + "\n")


def read_records(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield Record.model_validate_json(line)
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: not a benchmark record: {error}") from None


def layer_names(records: Iterable[Record]) -> list[str]:
    """Layer names in cascade order, as they appear in the traces."""
    names: list[str] = []
    for record in records:
        for verdict in record.trace:
            if verdict.layer not in names:
                names.append(verdict.layer)
    return names


def dumps(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"

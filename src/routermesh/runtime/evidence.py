"""What L0 knows about each route: its examples and the phrases of its description.

A person writing a RouteTable by hand gives a description and a handful of examples
per route. The description names what the server does in words the examples may
never use ("connected clients and devices", "DHCP leases"), so it is evidence too:
the whole description and each of its phrases (the parts between commas, colons,
semicolons, sentence ends and "and") become vectors of the route beside its examples. They
are not requests, so the calibration never queries them (see
:func:`routermesh.runtime.example_index.build_index`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from routermesh.runtime.contract.config import ESCALATE_ROUTE, RouterConfig, route_name_from_label

_PHRASE_BREAK = re.compile(r"[,;:()]|\.(?:\s|$)|\s+-\s+|\s+and\s+")
MIN_PHRASE_WORDS = 2
MAX_PHRASES = 24
"""Phrases taken from one description (a long description must not outweigh examples)."""


@dataclass(frozen=True)
class Evidence:
    """One vector's text and route; ``request`` for examples (queried when calibrating),
    not for description phrases."""

    text: str
    route: str
    request: bool = True


def description_phrases(description: str) -> list[str]:
    """The description itself and its phrases of at least two words, in order, once."""
    flat = " ".join(description.split())
    if not flat:
        return []
    phrases = [flat]
    for part in _PHRASE_BREAK.split(flat):
        phrase = part.strip(" .-")
        if len(phrase.split()) >= MIN_PHRASE_WORDS and phrase not in phrases:
            phrases.append(phrase)
    return phrases[: MAX_PHRASES + 1]


def route_examples(
    config: RouterConfig, models_dir: Path
) -> tuple[list[tuple[str, str]], list[str]]:
    """(text, route) pairs of every route (inline and ``examplesFrom``), and the labels.

    ``examplesFrom`` rows for routes outside the table are skipped, ``__escalate__``
    rows are examples of the escalation route; duplicates count once.
    """
    routes = list(config.route_names)
    known = set(routes)
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []

    def add(text: str, route: str) -> None:
        text = " ".join(text.split())
        if text and route in known and (text, route) not in seen:
            seen.add((text, route))
            pairs.append((text, route))

    for route in config.routes:
        for example in route.examples:
            add(example, route.name)
    for source in config.examples_from:
        for text, label in _jsonl_rows(models_dir / source.path):
            add(
                text,
                config.escalation.route
                if label == ESCALATE_ROUTE
                else route_name_from_label(label),
            )
    return pairs, routes


def description_evidence(config: RouterConfig) -> list[Evidence]:
    """Each route's description phrases (the escalation route's description is the
    mesh's own words for "everything else" and stays out)."""
    return [
        Evidence(text=phrase, route=route.name, request=False)
        for route in config.routes
        for phrase in description_phrases(route.description)
    ]


def _jsonl_rows(path: Path) -> Iterable[tuple[str, str]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(row, dict)
                and isinstance(row.get("text"), str)
                and isinstance(row.get("route"), str)
            ):
                yield row["text"], row["route"]

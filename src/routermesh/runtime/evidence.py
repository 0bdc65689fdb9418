"""What L0 knows about each route: its examples and the phrases of its description.

A person writing a RouteTable by hand gives a description and a handful of examples
per route. The description names what the server does in words the examples may
never use ("connected clients and devices", "DHCP leases"), so it is evidence too:
the whole description and each of its phrases (the parts between commas, colons,
semicolons, sentence ends and "and") become vectors of the route beside its examples. They
are not requests, so the calibration never queries them (see
:func:`routermesh.runtime.example_index.build_index`).

A route whose target is an MCP server may also carry the tools the server listed: each
tool is one vector of the route, its name in words with its title and description (capped
per route, so a server that lists hundreds of tools does not drown the examples). One
vector per tool measured better than a tool's description split into phrases as a
description is: more vectors per tool gave requests outside every route, and single
requests, near neighbours in several routes (the MCP section of docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from routermesh.runtime.contract.config import (
    ESCALATE_ROUTE,
    HeadMode,
    RouteConfig,
    RouterConfig,
    ToolEvidence,
    route_name_from_label,
)

_PHRASE_BREAK = re.compile(r"[,;:()]|\.(?:\s|$)|\s+-\s+|\s+and\s+")
MIN_PHRASE_WORDS = 2
MAX_PHRASES = 24
"""Phrases taken from one description (a long description must not outweigh examples)."""
MAX_TOOL_EVIDENCE = 256
"""Tool vectors of one route at most."""
_NAME_BREAK = re.compile(r"[_\-./:]+|(?<=[a-z0-9])(?=[A-Z])")


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


def training_pairs(
    pairs: Sequence[tuple[str, str]], config: RouterConfig, mode: HeadMode
) -> list[tuple[str, str]]:
    """What L0's training Job learns from, given the table's example ``pairs``: the
    examples for a head; the examples and the description phrases for a tuned encoder (a
    table of ten examples per route has few words to spare)."""
    if mode == "head":
        return list(pairs)
    return [*pairs, *((item.text, item.route) for item in description_evidence(config))]


def description_evidence(config: RouterConfig) -> list[Evidence]:
    """Each route's description phrases (the escalation route's description is the
    mesh's own words for "everything else" and stays out)."""
    return [
        Evidence(text=phrase, route=route.name, request=False)
        for route in config.routes
        for phrase in description_phrases(route.description)
    ]


def tool_words(name: str) -> str:
    """A tool name as words: ``list_wifi_clients`` and ``listWifiClients`` ->
    ``list wifi clients``."""
    return " ".join(part.lower() for part in _NAME_BREAK.split(name) if part)


def tool_text(tool: ToolEvidence) -> str:
    """One tool's evidence: its name in words, then its title and description."""
    words = tool_words(tool.name)
    about = " ".join(part for part in (tool.title, tool.description) if part)
    return f"{words}: {about}" if about else words


def tool_evidence(config: RouterConfig) -> list[Evidence]:
    """The phrases of the tools discovered on each route's MCP server."""
    evidence: list[Evidence] = []
    for route in config.routes:
        texts: list[str] = []
        for tool in route.tools:
            text = tool_text(tool)
            if text not in texts:
                texts.append(text)
        evidence += [
            Evidence(text=text, route=route.name, request=False)
            for text in texts[:MAX_TOOL_EVIDENCE]
        ]
    return evidence


def route_summary(route: RouteConfig) -> str:
    """A route's description for a prompt: its own words, else what its MCP server's
    tools do (their titles or names in words)."""
    if route.description.strip() or not route.tools:
        return route.description
    return "Tools: " + ", ".join(tool.title or tool_words(tool.name) for tool in route.tools)


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

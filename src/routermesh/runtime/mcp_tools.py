"""An MCP server's ``tools/list`` as route evidence: cleaned, capped, never trusted.

What a server says about its tools is data. It becomes vectors of L0 and, cut to a
line, words in a generative judge's prompt, where the prompt builder frames it as a
quoted description; it never changes a threshold, a route or an instruction. So it is
cleaned here the same way whatever the server: control characters and markup-like line
breaks become spaces, every field is cut to the contract's caps, and a server that lists
too many tools or too much text is cut to ``max_tools`` and ``max_text_bytes`` (the
first ones listed), with a note saying what was dropped. A malformed entry (no name, a
name that is not a string) is skipped and noted; it never fails the whole list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from routermesh.runtime.contract.config import (
    MAX_TOOL_DESCRIPTION_CHARS,
    MAX_TOOL_NAME_CHARS,
    MAX_TOOL_PARAMETER_CHARS,
    MAX_TOOL_PARAMETERS,
    MAX_TOOL_TITLE_CHARS,
    ToolEvidence,
)

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ToolList:
    """The tools kept from one server and what was dropped on the way."""

    tools: tuple[ToolEvidence, ...]
    listed: int
    """Entries the server listed, malformed ones included."""
    notes: tuple[str, ...] = field(default=())


def clean_text(value: object, limit: int) -> str:
    """A string with control and format characters as spaces, whitespace collapsed, cut
    to ``limit`` characters; anything that is not a string is empty."""
    if not isinstance(value, str):
        return ""
    chars = (" " if unicodedata.category(c)[0] == "C" else c for c in value)
    return _SPACES.sub(" ", "".join(chars)).strip()[:limit].rstrip()


def _parameters(schema: object) -> tuple[str, ...]:
    if not isinstance(schema, Mapping):
        return ()
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return ()
    out: list[str] = []
    for name, spec in list(properties.items())[:MAX_TOOL_PARAMETERS]:
        words = clean_text(name, 64)
        if not words:
            continue
        about = (
            clean_text(spec.get("description"), MAX_TOOL_PARAMETER_CHARS)
            if isinstance(spec, Mapping)
            else ""
        )
        out.append(f"{words}: {about}"[:MAX_TOOL_PARAMETER_CHARS].rstrip(" :") if about else words)
    return tuple(out)


def _title(entry: Mapping[str, Any]) -> str:
    title = entry.get("title")
    annotations = entry.get("annotations")
    if not isinstance(title, str) and isinstance(annotations, Mapping):
        title = annotations.get("title")
    return clean_text(title, MAX_TOOL_TITLE_CHARS)


def _size(tool: ToolEvidence) -> int:
    text = "".join((tool.name, tool.title, tool.description, *tool.parameters))
    return len(text.encode("utf-8"))


def tool_list(entries: Iterable[object], *, max_tools: int, max_text_bytes: int) -> ToolList:
    """The evidence of a server's listed tool ``entries`` (``tools/list`` results, as
    JSON objects), in the server's order."""
    kept: list[ToolEvidence] = []
    names: set[str] = set()
    listed = malformed = duplicates = over_count = over_bytes = 0
    used = 0
    for entry in entries:
        listed += 1
        name = (
            clean_text(entry.get("name"), MAX_TOOL_NAME_CHARS) if isinstance(entry, Mapping) else ""
        )
        if not name or not isinstance(entry, Mapping):
            malformed += 1
            continue
        if name in names:
            duplicates += 1
            continue
        if len(kept) >= max_tools:
            over_count += 1
            continue
        tool = ToolEvidence(
            name=name,
            title=_title(entry),
            description=clean_text(entry.get("description"), MAX_TOOL_DESCRIPTION_CHARS),
            parameters=_parameters(entry.get("inputSchema")),
        )
        size = _size(tool)
        if used + size > max_text_bytes:
            over_bytes += 1
            continue
        used += size
        names.add(name)
        kept.append(tool)
    notes = []
    if malformed:
        notes.append(f"{malformed} malformed tool entries skipped (no string name)")
    if duplicates:
        notes.append(f"{duplicates} duplicate tool names skipped")
    if over_count:
        notes.append(f"{over_count} tools over maxTools ({max_tools}) dropped")
    if over_bytes:
        notes.append(f"{over_bytes} tools over maxTextBytes ({max_text_bytes}) dropped")
    return ToolList(tools=tuple(kept), listed=listed, notes=tuple(notes))

"""Bootstrap a RouteTable from labelled JSONL (``router-mesh routetable from-jsonl``).

Input: one JSON object per line with "text" and "route" (optionally "intent"),
as in shared datasets or a router's own decision logs. Rows routed to
``__escalate__`` (out of scope) are skipped: they are what the mesh escalates.

The table gets a few inline examples per route, chosen to cover the route's
intents (round robin over intents in first-seen order), and optionally an
``examplesFrom`` reference to the full file, so the router can use every example
while the custom resource stays small.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from routermesh.operator import api
from routermesh.runtime.contract.config import ESCALATE_ROUTE, route_name_from_label


class JsonlError(ValueError):
    pass


@dataclass(frozen=True)
class Row:
    text: str
    route: str
    intent: str | None


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a labelled JSONL file; a malformed line is an error naming its number."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise JsonlError(f"{path}:{number}: invalid JSON: {error.msg}") from None
            if not isinstance(data, dict):
                raise JsonlError(f"{path}:{number}: expected an object")
            text, route = data.get("text"), data.get("route")
            if not isinstance(text, str) or not isinstance(route, str):
                raise JsonlError(f'{path}:{number}: "text" and "route" must be strings')
            intent = data.get("intent")
            yield Row(text=text, route=route, intent=intent if isinstance(intent, str) else None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pick_examples(rows: list[Row], count: int) -> list[str]:
    by_intent: OrderedDict[str | None, list[str]] = OrderedDict()
    for row in rows:
        text = " ".join(row.text.split())
        if 0 < len(text) <= api.MAX_EXAMPLE_LENGTH:
            by_intent.setdefault(row.intent, []).append(text)
    picked: list[str] = []
    seen: set[str] = set()
    queues = [iter(texts) for texts in by_intent.values()]
    while queues and len(picked) < count:
        alive = []
        for queue in queues:
            for text in queue:
                if text not in seen:
                    seen.add(text)
                    picked.append(text)
                    alive.append(queue)
                    break
            if len(picked) >= count:
                break
        queues = alive
    return picked


def _describe(route: str, rows: list[Row]) -> str:
    intents = list(OrderedDict.fromkeys(r.intent for r in rows if r.intent))
    if not intents:
        return ""
    words = ", ".join(i.replace("_", " ") for i in intents)
    text = f"Requests about {route.replace('-', ' ')}: {words}."
    return text[: api.MAX_DESCRIPTION_LENGTH]


def routetable_from_rows(
    rows: Iterable[Row],
    *,
    name: str,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    examples_per_route: int = 5,
    examples_from: api.ExamplesFrom | None = None,
    target_template: str = "http://{route}.mcp.svc:8080/mcp",
) -> api.RouteTable:
    """A RouteTable with one route per label (in name order). Targets are filled from
    ``target_template`` (``{route}`` is replaced) for the user to adjust."""
    if not 0 <= examples_per_route <= api.MAX_INLINE_EXAMPLES_PER_ROUTE:
        raise ValueError(
            f"examples per route must be 0..{api.MAX_INLINE_EXAMPLES_PER_ROUTE}, "
            f"not {examples_per_route}"
        )
    grouped: defaultdict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.route == ESCALATE_ROUTE:
            continue
        route = route_name_from_label(row.route)
        if not route:
            raise JsonlError(f"route label {row.route!r} has no usable characters")
        grouped[route].append(row)
    if not grouped:
        raise JsonlError("no routed rows (every row was empty or __escalate__)")
    if len(grouped) > api.MAX_ROUTES_PER_TABLE:
        raise JsonlError(
            f"{len(grouped)} routes; a RouteTable holds at most {api.MAX_ROUTES_PER_TABLE}"
        )
    routes = [
        api.Route(
            name=route,
            description=_describe(route, grouped[route]),
            examples=_pick_examples(grouped[route], examples_per_route),
            target=api.RouteTarget(url=target_template.format(route=route)),
        )
        for route in sorted(grouped)
    ]
    meta: dict[str, object] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return api.RouteTable(
        api_version=api.API_GROUP_VERSION,
        kind="RouteTable",
        metadata=api.ObjectMeta.model_validate(meta),
        spec=api.RouteTableSpec(routes=routes, examples_from=examples_from),
    )

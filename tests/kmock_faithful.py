"""A kmock Kubernetes emulator faithful enough for kopf and for the operator's server-side
apply (the operator's tests run without a cluster).

Plain kmock keeps no resourceVersion, uid or generation, replays every object on each new
watch, and applies every PATCH as a JSON merge patch: a field the operator stops applying
would never be removed, and nothing tells one writer's fields from another's. This
subclass adds, on every write:

- uid, generation (bumped by changes outside metadata and status), creationTimestamp and
  an increasing resourceVersion; a write that changes nothing is no write (same
  resourceVersion, no watch event), as on a real API server;
- 409 for a stale resourceVersion, 422 for a failed JSON-patch ``test``, 415 for a patch
  type the server does not take;
- server-side apply (``application/apply-patch+yaml``): the config is merged by the
  types' OpenAPI schemas (``x-kubernetes-list-type``/``-list-map-keys``/``-map-type``,
  from kubernetes-validate's copy of the upstream OpenAPI; the repository's CRDs for its
  own kinds), fields this manager applied before and omits now are removed unless
  another manager owns them, a field another manager owns and this apply changes is a
  409 conflict unless ``force``, which moves the field to the applier; an apply to a
  missing object creates it (and needs RBAC ``create`` as well as ``patch``);
- ``metadata.managedFields`` for every write (Apply entries for apply, Update entries for
  create and other patches, by ``fieldManager`` or else the User-Agent's product, per
  subresource), as the API server's field manager keeps them;
- the status subresource split: a write to the object ignores ``status``, a write to
  ``/status`` changes only ``status``;
- watches that resume from ``?resourceVersion`` instead of replaying, subscribing before
  their snapshot so no event is lost in between.

What is not emulated: defaulting and validation of the built-in types (a field removed
by apply stays absent where the API server would put its default back), admission, and
garbage collection. Every request is recorded (:class:`Call`), here and in
:data:`SESSION_CALLS`, so a test can derive the RBAC the operator needs from what it did.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import importlib.resources
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import jsonpatch
import kubernetes_validate
import yaml
from kmock import KubernetesEmulator, KubernetesError, action
from kmock._internal import parsing

REPO = Path(__file__).resolve().parents[1]
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}
TEST_AGENT = "kmock/"
"""The User-Agent of kmock's own client: the test's requests, not the operator's."""

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

FieldPath = tuple[str, ...]
"""A field as in FieldsV1: ``f:<name>``, ``k:<key JSON>`` (an item of a map list) and
``v:<value JSON>`` (an item of a set list) from the object's root."""

IGNORED_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "managedFields",
        "selfLink",
    }
)
"""What the API server's field manager never tracks (its ``stripMeta``)."""
OMIT_EMPTY_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
"""ObjectMeta fields the API server drops when empty (Go ``omitempty``)."""
KEY_DEFAULTS = {"protocol": "TCP"}
"""Map-list keys with a schema default (ports): an item may omit them."""


class Call(NamedTuple):
    """One request, as RBAC sees it: a verb on a group's resource (and subresource),
    namespaced (``namespace``) or cluster-wide (None); ``agent`` is the User-Agent."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str | None
    name: str | None
    agent: str

    @property
    def by_test(self) -> bool:
        return self.agent.startswith(TEST_AGENT)


SESSION_CALLS: set[Call] = set()
"""Every request any :class:`FaithfulEmulator` served in this pytest session."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class ApplyError(Exception):
    """A request the API server refuses: HTTP ``status`` with its ``reason``."""

    def __init__(
        self, status: int, reason: str, message: str, causes: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.causes = causes or []

    def to_kubernetes(self) -> KubernetesError:
        details = {"causes": self.causes} if self.causes else None
        return KubernetesError(
            status=self.status, reason=self.reason, message=self.message, details=details
        )


# --- schemas -------------------------------------------------------------------------------------


Node = Mapping[str, Any] | None
"""An OpenAPI schema node; None where the schema says nothing (the field is then handled
as the API server does for unknown fields: maps merge key by key, lists are atomic)."""

OBJECT_META = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


class Schemas:
    """The OpenAPI of the built-in types (kubernetes-validate's copy of the upstream
    OpenAPI, with its ``x-kubernetes-*`` list and map types) and the repository's CRDs."""

    def __init__(self, defs: Mapping[str, Any], crds: Iterable[Mapping[str, Any]]) -> None:
        self.defs = defs
        self.roots: dict[tuple[str, str], Node] = {}
        for definition in defs.values():
            for gvk in definition.get("x-kubernetes-group-version-kind", []):
                group = f"{gvk['group']}/" if gvk["group"] else ""
                self.roots[(f"{group}{gvk['version']}", gvk["kind"])] = definition
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                schema.setdefault("properties", {})["metadata"] = OBJECT_META
                self.roots[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema

    def root(self, api_version: str, kind: str) -> Node:
        return self.roots.get((api_version, kind)) or {"properties": {"metadata": OBJECT_META}}

    def resolve(self, node: Node) -> Node:
        while node is not None and "$ref" in node:
            node = self.defs[str(node["$ref"]).rsplit("/", 1)[-1]]
        return node

    def _extension(self, node: Node, key: str) -> Any:
        if node is None:
            return None
        if key in node:
            return node[key]
        resolved = self.resolve(node)
        return None if resolved is None else resolved.get(key)

    def field(self, node: Node, name: str) -> Node:
        resolved = self.resolve(node)
        if resolved is None:
            return None
        properties = resolved.get("properties") or {}
        if name in properties:
            return properties[name]  # type: ignore[no-any-return]
        extra = resolved.get("additionalProperties")
        return extra if isinstance(extra, Mapping) else None

    def items(self, node: Node) -> Node:
        resolved = self.resolve(node)
        return None if resolved is None else resolved.get("items")

    def atomic_map(self, node: Node) -> bool:
        return bool(self._extension(node, "x-kubernetes-map-type") == "atomic")

    def list_type(self, node: Node) -> tuple[str, tuple[str, ...]]:
        """("atomic" | "map" | "set", map keys): the list type, else the patch strategy
        (as the API server converts older schemas); atomic by default."""
        kind = self._extension(node, "x-kubernetes-list-type")
        if kind == "map":
            return "map", tuple(self._extension(node, "x-kubernetes-list-map-keys") or ())
        if kind in ("set", "atomic"):
            return str(kind), ()
        strategy = str(self._extension(node, "x-kubernetes-patch-strategy") or "")
        if strategy.split(",", maxsplit=1)[0] == "merge":
            key = self._extension(node, "x-kubernetes-patch-merge-key")
            return ("map", (str(key),)) if key else ("set", ())
        return "atomic", ()


@cache
def schemas() -> Schemas:
    version = kubernetes_validate.latest_version()
    path = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local"
        / "_definitions.json"
    )
    defs = json.loads(path.read_text())["$defs"]
    crds = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    return Schemas(defs, crds)


# --- field sets ----------------------------------------------------------------------------------


def element(item: Any, kind: str, keys: tuple[str, ...]) -> str:
    """The path element of a list item (``k:`` by the map keys, ``v:`` by value)."""
    if kind == "set":
        return "v:" + _json(item)
    if not isinstance(item, Mapping):
        raise ApplyError(422, "Invalid", f"a map-list item is not an object: {item!r}")
    key: dict[str, Any] = {}
    for name in keys:
        if name in item:
            key[name] = item[name]
        elif name in KEY_DEFAULTS:
            key[name] = KEY_DEFAULTS[name]
        else:
            raise ApplyError(
                422,
                "Invalid",
                f"associative list with keys has an element that omits key field {name!r}",
            )
    return "k:" + _json(key)


def field_set(value: Any, node: Node, schema: Schemas, path: FieldPath = ()) -> set[FieldPath]:
    """The fields ``value`` sets: its leaves (scalars, atomic lists and maps, empty maps)
    and the items of its map and set lists."""
    out: set[FieldPath] = set()
    _walk(value, node, schema, path, out)
    return out


def _walk(value: Any, node: Node, schema: Schemas, path: FieldPath, out: set[FieldPath]) -> None:
    if isinstance(value, Mapping) and not schema.atomic_map(node):
        if not value and path:
            out.add(path)
        for name, child in value.items():
            _walk(child, schema.field(node, name), schema, (*path, f"f:{name}"), out)
        return
    if isinstance(value, list):
        kind, keys = schema.list_type(node)
        if kind != "atomic" and value:
            item_node = schema.items(node)
            seen: set[str] = set()
            for item in value:
                pe = element(item, kind, keys)
                if pe in seen:
                    raise ApplyError(422, "Invalid", f"duplicate entries for key {pe[2:]}")
                seen.add(pe)
                out.add((*path, pe))
                if kind == "map":
                    for name, child in item.items():
                        child_path = (*path, pe, f"f:{name}")
                        _walk(child, schema.field(item_node, name), schema, child_path, out)
            return
    if path:
        out.add(path)


def to_fields_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """A field set as ``metadata.managedFields[].fieldsV1``."""
    paths = list(paths)
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for pe in path:
            node = node.setdefault(pe, {})
    for path in paths:
        node = root
        for pe in path:
            node = node[pe]
        if node:  # a member that also has children
            node["."] = {}
    return root


def from_fields_v1(fields: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    out: set[FieldPath] = set()
    for pe, children in fields.items():
        if pe == ".":
            out.add(prefix)
        elif not children:
            out.add((*prefix, pe))
        else:
            out |= from_fields_v1(children, (*prefix, pe))
    return out


def _find(items: list[Any], pe: str) -> int | None:
    wanted = json.loads(pe[2:])
    for index, item in enumerate(items):
        if pe.startswith("v:"):
            if item == wanted:
                return index
        elif isinstance(item, Mapping) and all(
            item.get(k, KEY_DEFAULTS.get(k)) == v for k, v in wanted.items()
        ):
            return index
    return None


def value_at(obj: Any, path: FieldPath) -> tuple[bool, Any]:
    current = obj
    for pe in path:
        if pe.startswith("f:"):
            if not isinstance(current, Mapping) or pe[2:] not in current:
                return False, None
            current = current[pe[2:]]
        else:
            index = _find(current, pe) if isinstance(current, list) else None
            if index is None:
                return False, None
            current = current[index]
    return True, current


def remove_at(obj: dict[str, Any], path: FieldPath) -> None:
    if path == ("f:metadata",):  # the untracked metadata (name, uid, ...) stays
        meta = obj.get("metadata") or {}
        for name in [n for n in meta if n not in IGNORED_METADATA]:
            del meta[name]
        return
    found, parent = value_at(obj, path[:-1])
    if not found:
        return
    last = path[-1]
    if last.startswith("f:"):
        if isinstance(parent, dict):
            parent.pop(last[2:], None)
    elif isinstance(parent, list):
        index = _find(parent, last)
        if index is not None:
            del parent[index]


def path_string(path: FieldPath) -> str:
    """A field path as the API server writes it in a conflict (``.spec.replicas``,
    ``.spec.containers[name="l1"].image``)."""
    out = ""
    for pe in path:
        if pe.startswith("f:"):
            out += f".{pe[2:]}"
        elif pe.startswith("k:"):
            key = json.loads(pe[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
        else:
            out += f"[={pe[2:]}]"
    return out


def _named_fields_are_members(paths: Iterable[FieldPath]) -> set[FieldPath]:
    """Every field on the way to a set field counts as set (what keeps a struct that
    still has an owned field from being removed with a sibling)."""
    out = set(paths)
    for path in list(out):
        for end in range(1, len(path)):
            if path[end - 1].startswith("f:"):
                out.add(path[:end])
    return out


# --- merge ---------------------------------------------------------------------------------------


def merge(live: Any, config: Any, node: Node, schema: Schemas) -> Any:
    """``config`` merged onto ``live`` as server-side apply merges: maps key by key, map
    and set lists item by item (the order of structured-merge-diff: config items in
    config order, live-only items where they were), everything else replaced."""
    if isinstance(live, Mapping) and isinstance(config, Mapping) and not schema.atomic_map(node):
        out = copy.deepcopy(dict(live))
        for name, value in config.items():
            out[name] = (
                merge(live[name], value, schema.field(node, name), schema)
                if name in live
                else copy.deepcopy(value)
            )
        return out
    if isinstance(live, list) and isinstance(config, list):
        list_type = schema.list_type(node)
        if list_type[0] != "atomic":
            return _merge_list(live, config, list_type, schema.items(node), schema)
    return copy.deepcopy(config)


def _merge_list(
    live: list[Any],
    config: list[Any],
    list_type: tuple[str, tuple[str, ...]],
    item_node: Node,
    schema: Schemas,
) -> list[Any]:
    kind, keys = list_type
    lhs = [element(item, kind, keys) for item in live]
    rhs = [element(item, kind, keys) for item in config]
    live_items = dict(zip(lhs, live, strict=True))
    config_items = dict(zip(rhs, config, strict=True))
    shared = [pe for pe in rhs if pe in live_items]
    out: list[Any] = []
    merged: set[str] = set()
    li = ri = si = 0

    def take(pe: str) -> Any:
        nonlocal si
        merged.add(pe)
        if si < len(shared) and shared[si] == pe:
            si += 1
        if kind == "map" and pe in live_items:
            return merge(live_items[pe], config_items[pe], item_node, schema)
        return copy.deepcopy(config_items[pe])

    while li < len(lhs) or ri < len(rhs):
        if li < len(lhs) and ri < len(rhs):
            pe = lhs[li]
            if pe == rhs[ri]:
                out.append(take(pe))
                li, ri = li + 1, ri + 1
                continue
            if pe in config_items and si < len(shared) and shared[si] != pe:
                li += 1  # a shared item, placed where the config puts it
                continue
        if li < len(lhs):
            pe = lhs[li]
            if pe not in config_items:
                out.append(copy.deepcopy(live[li]))
                li += 1
                continue
            if pe in merged:
                li += 1
                continue
        if ri < len(rhs):
            out.append(take(rhs[ri]))
            ri += 1
    return out


# --- managed fields ------------------------------------------------------------------------------


@dataclass
class Manager:
    """One ``metadata.managedFields`` entry."""

    manager: str
    operation: str
    api_version: str
    time: str
    fields: set[FieldPath]
    subresource: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.manager, self.operation, self.subresource

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> Manager:
        return cls(
            manager=str(entry.get("manager", "")),
            operation=str(entry.get("operation", "Update")),
            api_version=str(entry.get("apiVersion", "")),
            time=str(entry.get("time", "")),
            fields=from_fields_v1(entry.get("fieldsV1") or {}),
            subresource=str(entry.get("subresource", "")),
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.fields),
        }
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def _managers(obj: Mapping[str, Any] | None) -> list[Manager]:
    entries = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    return [Manager.parse(entry) for entry in entries]


def tracked(obj: Mapping[str, Any] | None, subresource: str, has_status: bool) -> dict[str, Any]:
    """What the field manager tracks of a write to ``subresource`` ("" or "status"): no
    type or identity fields; status only through the status subresource, where it is all
    that counts."""
    if obj is None:
        return {}
    if subresource == "status":
        return {"status": copy.deepcopy(obj["status"])} if "status" in obj else {}
    out = {
        k: copy.deepcopy(v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")
    }
    if has_status:
        out.pop("status", None)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in IGNORED_METADATA}
    if meta:
        out["metadata"] = copy.deepcopy(meta)
    return out


def compare(
    old: Mapping[str, Any], new: Mapping[str, Any], node: Node, schema: Schemas
) -> tuple[set[FieldPath], set[FieldPath], set[FieldPath]]:
    """(modified, added, removed) fields from ``old`` to ``new``."""
    before, after = field_set(old, node, schema), field_set(new, node, schema)
    modified = {
        path
        for path in before & after
        if path[-1].startswith("f:") and value_at(old, path)[1] != value_at(new, path)[1]
    }
    return modified, after - before, before - after


def _omit_empty(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    for name in OMIT_EMPTY_METADATA:
        if name in meta and not meta[name]:
            del meta[name]


def server_side_apply(
    live: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    *,
    manager: str,
    force: bool,
    now: str,
    schema: Schemas,
    subresource: str = "",
    has_status: bool = True,
) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (None: it creates it),
    with its managedFields; :class:`ApplyError` (409) for a conflict without ``force``."""
    node = schema.root(str(config.get("apiVersion")), str(config.get("kind")))
    applied_config = tracked(config, subresource, has_status)
    applied = field_set(applied_config, node, schema)
    entries = _managers(live)
    mine = next((e for e in entries if e.key == (manager, "Apply", subresource)), None)
    others = [e for e in entries if e is not mine]
    if live is None:
        new: dict[str, Any] = copy.deepcopy(dict(config))
        meta = new.setdefault("metadata", {})
        meta.pop("managedFields", None)
        if has_status and subresource != "status":
            new.pop("status", None)
    else:
        new = merge(live, applied_config, node, schema)
    # Fields this manager applied last time and no longer applies: removed, unless
    # someone (another manager, or this config) still owns them.
    last = mine.fields if mine else set()
    owned = set(applied).union(*(e.fields for e in others))
    for path in sorted(_named_fields_are_members(last) - _named_fields_are_members(owned), key=len):
        remove_at(new, path)
    _omit_empty(new)
    # Conflicts: fields another manager owns that this apply changes.
    before, after = tracked(live, subresource, has_status), tracked(new, subresource, has_status)
    modified, added, removed = compare(before, after, node, schema)
    changed = modified | added
    conflicts = [(e, sorted(e.fields & changed)) for e in others if e.fields & changed]
    if conflicts and not force:
        causes = [
            {
                "type": "FieldManagerConflict",
                "message": f'conflict with "{e.manager}" using {e.api_version}',
                "field": path_string(path),
            }
            for e, paths in conflicts
            for path in paths
        ]
        listed = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
        raise ApplyError(
            409,
            "Conflict",
            f"Apply failed with {len(causes)} conflict(s):\n{listed}",
            causes,
        )
    for entry in others:
        entry.fields -= changed | removed
    api_version = str(config.get("apiVersion"))
    if mine is None:
        mine = Manager(manager, "Apply", api_version, now, set(), subresource)
        entries.append(mine)
    mine.fields, mine.api_version, mine.time = applied, api_version, now
    new.setdefault("metadata", {})["managedFields"] = [e.dump() for e in entries if e.fields]
    return new


def record_update(
    live: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    manager: str,
    api_version: str,
    now: str,
    schema: Schemas,
    subresource: str = "",
    has_status: bool = True,
) -> dict[str, Any]:
    """``new`` (written by a create, update or non-apply patch) with the managedFields the
    API server records: the writer's Update entry owns what it changed or added, and no
    one else owns those fields any more."""
    out: dict[str, Any] = copy.deepcopy(dict(new))
    node = schema.root(str(out.get("apiVersion")), str(out.get("kind")))
    before, after = tracked(live, subresource, has_status), tracked(out, subresource, has_status)
    modified, added, removed = compare(before, after, node, schema)
    entries = _managers(live)
    mine = next((e for e in entries if e.key == (manager, "Update", subresource)), None)
    for entry in entries:
        if entry is not mine:
            entry.fields -= modified | added | removed
    if mine is None:
        mine = Manager(manager, "Update", api_version, now, set(), subresource)
        entries.append(mine)
    if modified or added or removed:
        mine.time = now
    mine.fields = (mine.fields | modified | added) - removed
    mine.api_version = api_version
    out.setdefault("metadata", {})["managedFields"] = [e.dump() for e in entries if e.fields]
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = merge_patch(out.get(name), value)
    return out


def _without_times(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(obj))
    for entry in (out.get("metadata") or {}).get("managedFields") or []:
        entry.pop("time", None)
    return out


# --- kmock's URL parser --------------------------------------------------------------------------

_KMOCK_PARSE_PATH = parsing.parse_path
NAMESPACE_SUBRESOURCES = ("status", "finalize")


def _parse_path(path: str) -> Any:
    """kmock reads ``/api/v1/namespaces[/name]`` as a namespace prefix without its
    resource (and fails on the bare collection): Namespaces are a cluster-scoped resource,
    listed and watched by kopf, so they are parsed as one here."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in NAMESPACE_SUBRESOURCES)
    ):
        name = parts[3] if len(parts) > 3 else None
        subresource = parts[4] if len(parts) > 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
    return _KMOCK_PARSE_PATH(path)


parsing.parse_path = _parse_path


# --- the emulator --------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class FaithfulEmulator(KubernetesEmulator):
    _rv: int = attrs.field(default=0, init=False)
    _writes: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    clock: Callable[[], str] = attrs.field(default=_now)
    calls: list[Call] = attrs.field(factory=list, init=False)
    """Every request, in order (also added to :data:`SESSION_CALLS`)."""

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _handle(self, request: Any) -> Any:
        call = self._record(request)
        if request.resource is None or request.action not in (
            action.CREATE,
            action.UPDATE,
            action.DELETE,
        ):
            return await super()._handle(request)
        # One write at a time, from the read of the current object to its store: the
        # resourceVersion check, the merge and managedFields never see a stale object.
        async with self._writes:
            try:
                request = self._prepare_write(request, call)
            except ApplyError as error:
                raise error.to_kubernetes() from error
            return await super()._handle(request)

    def _record(self, request: Any) -> Call | None:
        resource = request.resource
        if resource is None or resource.plural is None:
            return None  # discovery (/api, /apis): allowed to every authenticated user
        verbs = {
            action.LIST: "list",
            action.WATCH: "watch",
            action.FETCH: "get",
            action.CREATE: "create",
            action.UPDATE: "patch",
            action.DELETE: "delete",
        }
        verb = verbs.get(request.action, str(request.method).lower())
        if verb == "delete" and request.name is None:
            verb = "deletecollection"
        call = Call(
            verb=verb,
            group=resource.group or "",
            resource=resource.plural,
            subresource=request.subresource or "",
            namespace=request.namespace,
            name=request.name,
            agent=str(request.headers.get("User-Agent", "")),
        )
        self._add(call)
        return call

    def _add(self, call: Call) -> None:
        self.calls.append(call)
        SESSION_CALLS.add(call)

    def _has_status(self, request: Any) -> bool:
        info = self.resources.get(request.resource)
        return "status" in (getattr(info, "subresources", None) or ())

    @staticmethod
    def _manager(request: Any) -> str:
        """The field manager: ``?fieldManager``, else the User-Agent's product name."""
        named = request.params.get("fieldManager")
        return str(named) if named else str(request.headers.get("User-Agent", "")).split("/")[0]

    @staticmethod
    def _content_type(request: Any) -> str:
        for name, value in request.headers.items():
            if name.lower() == "content-type":
                return str(value).split(";")[0].strip()
        return ""

    def _api_version(self, request: Any) -> str:
        group, version = request.resource.group, request.resource.version
        return f"{group}/{version}" if group else str(version)

    def _prepare_write(self, request: Any, call: Call | None) -> Any:
        if request.action == action.DELETE:
            return self._prepare_delete(request)
        if request.action == action.CREATE:
            return self._prepare_create(request)
        patch_type = self._patch_type(request)
        key = (request.resource, request.namespace, request.name)
        exists = key in self.objects and not self.objects[key].deleted
        body = self._apply_body(request) if patch_type == APPLY else None
        if body is not None and not exists:
            return self._apply_create(request, body, call)
        if not exists:
            return request  # kmock answers 404 itself
        current = copy.deepcopy(self.objects[key].raw)
        new = self._patched(request, patch_type, current, body)
        _omit_empty(new)
        meta = new.setdefault("metadata", {})
        for name in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
            if name in (current.get("metadata") or {}):
                meta[name] = current["metadata"][name]
        if _without_times(new) == _without_times(current):
            # Nothing changed: the API server stores nothing, bumps no resourceVersion and
            # sends no watch event; it answers with the object as it is.
            return self._replace(request, action=action.FETCH)
        outside = ("metadata", "status")
        if not request.subresource and {k: v for k, v in new.items() if k not in outside} != {
            k: v for k, v in current.items() if k not in outside
        }:
            meta["generation"] = int((current.get("metadata") or {}).get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        # kmock stores what its merge of request.data gives: a root replacement stores
        # exactly the object computed here.
        return self._replace(request, data=[{"op": "replace", "path": "", "value": new}])

    def _patch_type(self, request: Any) -> str:
        patch_type = self._content_type(request)
        agent = str(request.headers.get("User-Agent", ""))
        if patch_type == "application/json" and agent.startswith(TEST_AGENT):
            patch_type = MERGE  # the test's own client sends JSON; it means a merge patch
        if patch_type not in (APPLY, MERGE, JSON_PATCH):
            raise ApplyError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format ({patch_type!r}): accepted "
                f"media types include: {JSON_PATCH}, {MERGE}, {APPLY} ({STRATEGIC} is not "
                "emulated)",
            )
        if request.params.get("force") and patch_type != APPLY:
            raise ApplyError(400, "BadRequest", "force may only be specified for apply patches")
        return patch_type

    def _patched(
        self,
        request: Any,
        patch_type: str,
        current: dict[str, Any],
        body: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """``current`` after the request's patch, with its managedFields."""
        has_status = self._has_status(request)
        subresource = request.subresource or ""
        if body is not None:
            self._check_version(body, current)
            return server_side_apply(
                current,
                body,
                manager=self._manager(request),
                force=str(request.params.get("force", "")).lower() == "true",
                now=self.clock(),
                schema=schemas(),
                subresource=subresource,
                has_status=has_status,
            )
        if patch_type == JSON_PATCH:
            if not isinstance(request.data, list):
                raise ApplyError(400, "BadRequest", "a JSON patch is a list of operations")
            try:
                candidate = jsonpatch.apply_patch(copy.deepcopy(current), request.data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                raise ApplyError(422, "Invalid", str(error)) from error
        else:
            if not isinstance(request.data, dict):
                raise ApplyError(400, "BadRequest", "a merge patch is a JSON object")
            self._check_version(request.data, current)
            candidate = merge_patch(current, request.data)
        candidate = self._split_status(current, candidate, subresource, has_status)
        return record_update(
            current,
            candidate,
            manager=self._manager(request),
            api_version=self._api_version(request),
            now=self.clock(),
            schema=schemas(),
            subresource=subresource,
            has_status=has_status,
        )

    def _replace(self, request: Any, **changes: Any) -> Any:
        """``request`` with ``changes``, also in kmock's request history: kmock serves only
        a request its history holds (by identity)."""
        replaced = attrs.evolve(request, **changes)
        for index, seen in enumerate(self._requests):
            if seen is request:
                self._requests[index] = replaced
        return replaced

    @staticmethod
    def _check_version(body: Mapping[str, Any], current: Mapping[str, Any]) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != (current.get("metadata") or {}).get("resourceVersion"):
            raise ApplyError(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )

    @staticmethod
    def _split_status(
        current: dict[str, Any], candidate: dict[str, Any], subresource: str, has_status: bool
    ) -> dict[str, Any]:
        """A write to /status changes only status; a write to the object leaves status."""
        if subresource == "status":
            out = copy.deepcopy(current)
            out.pop("status", None)
            if "status" in candidate:
                out["status"] = candidate["status"]
            return out
        if has_status:
            candidate.pop("status", None)
            if "status" in current:
                candidate["status"] = copy.deepcopy(current["status"])
        return candidate

    def _apply_body(self, request: Any) -> dict[str, Any]:
        body = request.data
        if body is None:  # YAML, not JSON
            body = yaml.safe_load(request.text or "")
        if not isinstance(body, dict):
            raise ApplyError(400, "BadRequest", "an apply patch is one object")
        if not request.params.get("fieldManager"):
            raise ApplyError(
                400, "BadRequest", "fieldManager: Required value: is required for apply patch"
            )
        meta = body.get("metadata") or {}
        if meta.get("managedFields") is not None:
            raise ApplyError(400, "BadRequest", "metadata.managedFields must be nil")
        if meta.get("name") != request.name:
            raise ApplyError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({request.name})",
            )
        if body.get("apiVersion") != self._api_version(request) or not body.get("kind"):
            raise ApplyError(
                400,
                "BadRequest",
                f"apiVersion {body.get('apiVersion')!r} and kind {body.get('kind')!r} do not "
                f"match the URL's {self._api_version(request)!r}",
            )
        return body

    def _apply_create(self, request: Any, body: dict[str, Any], call: Call | None) -> Any:
        """An apply to a missing object creates it; authorizers ask for ``create`` too."""
        if call is not None:
            self._add(call._replace(verb="create"))
        new = server_side_apply(
            None,
            body,
            manager=self._manager(request),
            force=True,
            now=self.clock(),
            schema=schemas(),
            subresource=request.subresource or "",
            has_status=self._has_status(request),
        )
        self._stamp(new, request)
        _omit_empty(new)
        return self._replace(request, action=action.CREATE, data=new)

    def _prepare_create(self, request: Any) -> Any:
        data = request.data
        if not isinstance(data, dict):
            raise ApplyError(400, "BadRequest", "the body of a create is one object")
        new = copy.deepcopy(data)
        meta = new.setdefault("metadata", {})
        meta.pop("managedFields", None)
        has_status = self._has_status(request)
        agent = str(request.headers.get("User-Agent", ""))
        if has_status and not agent.startswith(TEST_AGENT):
            # A create never sets status; only the test seeds it, standing in for the
            # kubelet and the controllers this emulator has not.
            new.pop("status", None)
        new = record_update(
            None,
            new,
            manager=self._manager(request),
            api_version=self._api_version(request),
            now=self.clock(),
            schema=schemas(),
            has_status=has_status and not agent.startswith(TEST_AGENT),
        )
        self._stamp(new, request)
        _omit_empty(new)
        return self._replace(request, data=new)

    def _stamp(self, new: dict[str, Any], request: Any) -> None:
        meta = new.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace:
            meta.setdefault("namespace", request.namespace)
        meta.update(
            uid=str(uuid.uuid4()),
            generation=1,
            resourceVersion=self._next_rv(),
            creationTimestamp=self.clock(),
        )

    def _prepare_delete(self, request: Any) -> Any:
        key = (request.resource, request.namespace, request.name)
        live = request.name is not None and key in self.objects and not self.objects[key].deleted
        if live and not (self.objects[key].raw.get("metadata") or {}).get("deletionTimestamp"):
            # The deletion (or the deletionTimestamp a finalizer waits on) is a new version:
            # watchers resuming from the last one must see it.
            self.objects[key].patch({"metadata": {"resourceVersion": self._next_rv()}})
        return request

    async def _serve_list(self, request: Any) -> Any:
        result: Any = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(self._rv)
        return result

    def _objects_for(self, request: Any) -> Any:
        # kmock's own (name-mangled) selection of the objects a request reads.
        return self._KubernetesEmulator__get_objs(request, strict=False)  # type: ignore[attr-defined]

    def _matches(self, request: Any, meta: Mapping[str, Any]) -> bool:
        check = self._KubernetesEmulator__check  # type: ignore[attr-defined]
        namespace, name = meta.get("namespace"), meta.get("name")
        return bool(check(request, request.resource, namespace, name, strict=False))

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        since = request.params.get("resourceVersion", "")
        since_n = int(since) if since.isdigit() else 0
        bus = self._buses[request.resource]
        marker = await bus.mark()  # subscribe before the snapshot: no event lost between
        try:
            yield b""
            async with self._lock:
                objects = [o.raw for o in self._objects_for(request) if not o.deleted]
            for raw in objects:
                if int(raw.get("metadata", {}).get("resourceVersion") or 0) > since_n:
                    yield {"type": "ADDED" if not since_n else "MODIFIED", "object": raw}
            async for event in bus.stream(since=marker):
                meta = event["object"].get("metadata", {})
                if int(meta.get("resourceVersion") or 0) <= since_n:
                    continue
                if self._matches(request, meta):
                    yield event
        finally:
            await bus.unmark(marker)

"""A kmock Kubernetes emulator faithful enough for kopf (the operator's tests run without a
cluster): plain kmock keeps no resourceVersion, uid or generation and replays
every object on each new watch, so kopf would run handlers repeatedly and could not add
its finalizers. This subclass adds, on every write: uid, generation (bumped by spec
changes), creationTimestamp and an increasing resourceVersion; 409 for a stale
resourceVersion and 422 for a failed JSON-patch test; and watches that resume from
``?resourceVersion`` instead of replaying, subscribing before their snapshot so no event
is lost in between."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import jsonpatch
from kmock import KubernetesEmulator, KubernetesError, action

VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


@attrs.define(kw_only=True)
class FaithfulEmulator(KubernetesEmulator):  # type: ignore[misc]
    _rv: int = attrs.field(default=0, init=False)
    calls: set[tuple[str, str, str, str]] = attrs.field(factory=set, init=False)
    """(API group, resource[/subresource], verb, User-Agent) of every request: what RBAC
    must allow (the User-Agent tells the operator's requests from the test's own)."""

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _handle(self, request: Any) -> Any:
        self._record(request)
        if request.resource is not None and request.action in (action.CREATE, action.UPDATE):
            self._prepare_write(request)  # synchronous: nothing runs between check and write
        return await super()._handle(request)

    def _record(self, request: Any) -> None:
        resource = request.resource
        if resource is None or resource.plural is None:
            return  # discovery (/api, /apis): allowed to every authenticated user
        plural = resource.plural + (f"/{request.subresource}" if request.subresource else "")
        verbs = {
            action.LIST: "list",
            action.WATCH: "watch",
            action.FETCH: "get",
            action.CREATE: "create",
            action.DELETE: "delete",
        }
        verb = verbs.get(request.action)
        if verb is None:  # UPDATE: PATCH or PUT
            verb = "patch" if str(request.method).upper().endswith("PATCH") else "update"
        agent = str(request.headers.get("User-Agent", ""))
        self.calls.add((resource.group or "", plural, verb, agent))

    def _prepare_write(self, request: Any) -> None:
        data = request.data
        if request.action == action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.update(
                uid=str(uuid.uuid4()),
                generation=1,
                resourceVersion=self._next_rv(),
                creationTimestamp=datetime.datetime.now(datetime.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            )
            return
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return  # kmock answers 404 itself
        current = self.objects[key].raw
        current_meta = current.get("metadata", {})
        if isinstance(data, dict):  # a merge patch (and an apply sent as JSON)
            wanted = (data.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current_meta.get("resourceVersion"):
                raise KubernetesError(
                    status=409, reason="Conflict", message="the object has been modified"
                )
            meta = data.setdefault("metadata", {})
            meta["resourceVersion"] = self._next_rv()
            spec_changed = "spec" in data and data["spec"] != current.get("spec")
            if request.subresource is None and spec_changed:
                meta["generation"] = current_meta.get("generation", 1) + 1
        elif isinstance(data, list):  # a JSON patch: a failed `test` is 422, as in Kubernetes
            try:
                jsonpatch.apply_patch(current, data)
            except jsonpatch.JsonPatchException as error:
                raise KubernetesError(status=422, reason="Invalid", message=str(error)) from error
            data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": self._next_rv()}
            )

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(self._rv)
        return result

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        since = request.params.get("resourceVersion", "")
        since_n = int(since) if since.isdigit() else 0
        bus = self._buses[request.resource]
        marker = await bus.mark()  # subscribe before the snapshot: no event lost between
        try:
            yield b""
            async with self._lock:
                objects = [
                    o.raw
                    for o in self._KubernetesEmulator__get_objs(request, strict=False)
                    if not o.deleted
                ]
            for raw in objects:
                if int(raw.get("metadata", {}).get("resourceVersion") or 0) > since_n:
                    yield {"type": "ADDED" if not since_n else "MODIFIED", "object": raw}
            async for event in bus.stream(since=marker):
                meta = event["object"].get("metadata", {})
                if int(meta.get("resourceVersion") or 0) <= since_n:
                    continue
                if self._KubernetesEmulator__check(
                    request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
                ):
                    yield event
        finally:
            await bus.unmark(marker)

"""RouteTable status, pure: Accepted or the fields at fault, which meshes use it, the
route-quality warnings, and the events a change is worth (once, not on every pass)."""

from __future__ import annotations

import copy
from typing import Any

from routermesh.operator import api
from routermesh.operator.routetable_sync import TableStatuses
from routermesh.operator.routetables import (
    MAX_WARNINGS,
    merge_patch,
    quality_warnings,
    table_status,
    valid_meshes,
)

NOW, LATER = "2026-12-02T08:00:00Z", "2026-12-02T09:00:00Z"
TARGET = {"url": "http://mcp.tools.svc:8000/mcp"}
EXAMPLES = [f"check the proxmox node number {i}" for i in range(5)]


def _table(routes: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routermesh.io/v1alpha1",
        "kind": "RouteTable",
        "metadata": {"name": "homelab", "namespace": "tools", "generation": 3, **meta},
        "spec": {"routes": routes},
    }


def _route(name: str, examples: list[str], description: str = "a server") -> dict[str, Any]:
    return {"name": name, "description": description, "examples": examples, "target": TARGET}


def _mesh(name: str, selection: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "tools"},
        "spec": {"routeTables": selection},
    }


MESHES = valid_meshes(
    [
        _mesh("by-name", {"names": ["homelab"]}),
        _mesh("by-label", {"selector": {"matchLabels": {"team": "ops"}}}),
        _mesh("other", {"names": ["elsewhere"]}),
        {"metadata": {"name": "broken", "namespace": "tools"}, "spec": {"routeTables": {}}},
    ]
)


def test_only_valid_meshes_select() -> None:
    assert [m.metadata.name for m in MESHES] == ["by-name", "by-label", "other"]


def test_a_good_table_is_accepted_and_names_its_meshes() -> None:
    body = _table(
        [
            _route("proxmox", EXAMPLES),
            _route("grafana", [e.replace("proxmox", "grafana") for e in EXAMPLES]),
        ],
        labels={"team": "ops"},
    )
    outcome = table_status(body, MESHES, NOW)
    assert outcome.accepted
    assert outcome.status == {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "observedGeneration": 3,
                "lastTransitionTime": NOW,
                "reason": "Valid",
                "message": "2 routes, used by by-label, by-name",
            }
        ],
        "routes": 2,
        "examples": 10,
        "usedBy": ["by-label", "by-name"],
    }
    assert outcome.events == []


def test_an_unselected_table_says_so() -> None:
    outcome = table_status(_table([_route("proxmox", EXAMPLES)], name="spare"), MESHES, NOW)
    assert outcome.status["conditions"][0]["message"] == (
        "1 routes; no RouterMesh in this namespace selects this table"
    )
    assert "usedBy" not in outcome.status


def test_an_invalid_table_names_the_field_and_warns_once() -> None:
    body = _table([_route("Proxmox!", EXAMPLES), _route("grafana", [""])])
    outcome = table_status(body, MESHES, NOW)
    assert not outcome.accepted
    condition = outcome.status["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert condition["message"].startswith("left out of its meshes: ")
    assert "spec.routes.0.name" in condition["message"]
    assert "spec.routes.1.examples.0" in condition["message"]
    assert outcome.status["usedBy"] == ["by-name"]  # selected, but left out
    assert outcome.events == [("Warning", "InvalidSpec", condition["message"])]

    again = table_status({**body, "status": outcome.status}, MESHES, LATER)
    assert again.events == []  # the same problem is not announced on every pass
    assert again.status == outcome.status  # nor is the transition time moved

    fixed = table_status(
        {**_table([_route("proxmox", EXAMPLES)]), "status": outcome.status}, MESHES, LATER
    )
    assert fixed.accepted
    assert fixed.status["conditions"][0]["lastTransitionTime"] == LATER
    assert fixed.events == [("Normal", "Accepted", "1 routes, used by by-name")]


def test_quality_warnings_say_what_to_do() -> None:
    table = api.RouteTable.model_validate(
        _table(
            [
                _route("proxmox", ["restart vm 104", "Restart  VM 104", "list the nodes"]),
                _route("grafana", ["restart vm 104", *EXAMPLES[:4]], description=""),
                _route("elastic", EXAMPLES),
            ]
        )
    )
    assert quality_warnings(table) == [
        "route 'proxmox' has 3 example(s): add at least 5 varied requests (how people "
        "really ask) so it is recognised",
        "route 'grafana' has no description: say in plain words what requests belong to it "
        "(it is evidence for the router and the judges)",
        "example 'restart vm 104' is in routes proxmox, grafana: an example that belongs to "
        "several routes teaches none of them; keep it in one",
        "example 'check the proxmox node number 0' is in routes grafana, elastic: an example "
        "that belongs to several routes teaches none of them; keep it in one",
        "example 'check the proxmox node number 1' is in routes grafana, elastic: an example "
        "that belongs to several routes teaches none of them; keep it in one",
        "example 'check the proxmox node number 2' is in routes grafana, elastic: an example "
        "that belongs to several routes teaches none of them; keep it in one",
        "example 'check the proxmox node number 3' is in routes grafana, elastic: an example "
        "that belongs to several routes teaches none of them; keep it in one",
    ]


def test_a_table_with_an_examples_file_is_not_told_to_add_examples() -> None:
    body = _table([_route("proxmox", ["restart vm 104"])])
    body["spec"]["examplesFrom"] = {"uri": "https://example.com/train.jsonl"}
    assert quality_warnings(api.RouteTable.model_validate(body)) == []


def test_warnings_are_capped_and_announced_when_they_change() -> None:
    routes = [_route(f"r{i}", [f"request {i}"]) for i in range(30)]
    outcome = table_status(_table(routes), MESHES, NOW)
    warnings = outcome.status["warnings"]
    assert len(warnings) == MAX_WARNINGS == 20
    assert warnings[-1] == "and 11 more warnings"
    assert [e[:2] for e in outcome.events] == [("Warning", "RouteQuality")]
    again = table_status({**_table(routes), "status": outcome.status}, MESHES, LATER)
    assert again.events == []


def test_the_status_patch_nulls_what_is_gone() -> None:
    invalid = table_status(_table([_route("Bad!", EXAMPLES)]), MESHES, NOW).status
    valid = table_status(_table([_route("proxmox", EXAMPLES[:1])]), [], NOW).status
    patch = merge_patch(valid, invalid)
    assert patch["routes"] is None and patch["examples"] is None and patch["warnings"] is None
    assert patch["conditions"] == invalid["conditions"]
    untouched = copy.deepcopy(valid)
    assert merge_patch(valid, valid) == untouched


class RecordingKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        assert (api_version, kind, namespace) == ("routermesh.io/v1alpha1", "RouteTable", "tools")
        self.patches.append((name, status))


async def test_a_second_pass_writes_nothing_and_a_recreated_table_is_written_again() -> None:
    kube, posted = RecordingKube(), []
    statuses = TableStatuses()
    table = _table([_route("proxmox", ["restart vm 104"])], uid="uid-1")
    meshes = [_mesh("by-name", {"names": ["homelab"]})]

    def post(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        posted.append((body["metadata"]["uid"], reason))

    assert await statuses.sync(kube, "tools", [table], meshes, post) == 1  # type: ignore[arg-type]
    # The watch has not brought the written status back yet: the same body again.
    assert await statuses.sync(kube, "tools", [table], meshes, post) == 0  # type: ignore[arg-type]
    assert posted == [("uid-1", "RouteQuality")]
    recreated = {**table, "metadata": {**table["metadata"], "uid": "uid-2"}}
    assert await statuses.sync(kube, "tools", [recreated], meshes, post) == 1  # type: ignore[arg-type]
    assert [name for name, _ in kube.patches] == ["homelab", "homelab"]
    assert kube.patches[0][1]["usedBy"] == ["by-name"]

"""Routes whose target is an MCP server, on the operator's side: the API fields and their
validation, the rendered config, the credentials mounted into the orchestrator, and the
status the ready pods' reports become (RouterMesh status.mcpServers, the TargetsAvailable
condition and its events, RouteTable status.tools). The operator never talks to the
servers: everything here is pure."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import kubernetes_validate
import pytest

from routermesh.operator import api
from routermesh.operator import builders as b
from routermesh.operator.conditions import DeploymentState
from routermesh.operator.gating import gate_models
from routermesh.operator.reconcile import parse_and_render
from routermesh.operator.render import RenderError, render_config
from routermesh.operator.routetable_sync import TableStatuses
from routermesh.operator.routetables import (
    mesh_servers,
    quality_warnings,
    table_status,
    valid_meshes,
)
from routermesh.operator.status import Facts, Result, mcp_servers, mesh_result
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.readiness import ReadinessReport
from tests.conftest import CrdCheck, load_crds

NOW, LATER, LATEST = "2026-12-02T08:00:00Z", "2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SECRETS = "/var/run/secrets/router-mesh/mcp"
EXAMPLES = ["restart vm 104", "list the vms", "migrate vm 7", "snapshot vm 3", "stop vm 9"]


def _mesh_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "routermesh.io/v1alpha1",
        "kind": "RouterMesh",
        "metadata": {"name": "lab", "namespace": "tools", "uid": "u-1", "generation": 2},
        "spec": {"routeTables": {"names": ["servers"]}, **spec},
    }


def _route(name: str, mcp: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    target: dict[str, Any] = {"url": f"http://{name}.mcp.svc:8080/mcp"}
    if mcp is not None:
        target["mcp"] = mcp
    return {"name": name, "description": f"{name} server", "target": target, **fields}


def _table_body(*routes: dict[str, Any], name: str = "servers") -> dict[str, Any]:
    return {
        "apiVersion": "routermesh.io/v1alpha1",
        "kind": "RouteTable",
        "metadata": {"name": name, "namespace": "tools", "generation": 4},
        "spec": {"routes": list(routes)},
    }


def _render(*tables: dict[str, Any], **spec: Any) -> rc.RouterConfig:
    mesh = api.parse(api.RouterMesh, _mesh_body(**spec))
    return render_config(mesh, [api.parse(api.RouteTable, t) for t in tables])


FULL = {
    "discoverTools": False,
    "healthCheck": True,
    "refreshSeconds": 600,
    "pingSeconds": 10,
    "timeoutMs": 2500,
    "failuresToUnavailable": 3,
    "maxTools": 20,
    "maxTextBytes": 4096,
    "fallbackRoute": "grafana",
    "credentialsSecretRef": {"name": "proxmox-mcp", "key": "token"},
}


# --- API and render ----------------------------------------------------------------------------


def test_every_mcp_field_reaches_the_config_and_the_token_is_a_mounted_path() -> None:
    config = _render(_table_body(_route("proxmox", FULL), _route("grafana", {})))
    proxmox, grafana = config.routes
    assert proxmox.mcp == rc.McpConfig(
        discover_tools=False,
        health=True,
        refresh_seconds=600.0,
        ping_seconds=10.0,
        timeout_ms=2500,
        failures_to_unavailable=3,
        max_tools=20,
        max_text_bytes=4096,
        fallback_route="grafana",
        credentials_file="/var/run/secrets/router-mesh/mcp/proxmox-mcp/token",
    )
    assert proxmox.target == "http://proxmox.mcp.svc:8080/mcp"
    # An empty mcp block: every default, no credentials.
    assert grafana.mcp == rc.McpConfig(
        discover_tools=True,
        health=True,
        refresh_seconds=300.0,
        ping_seconds=5.0,
        timeout_ms=5000,
        failures_to_unavailable=2,
        max_tools=128,
        max_text_bytes=32768,
        fallback_route=None,
        credentials_file=None,
    )
    assert proxmox.tools == () and "proxmox-mcp/token" in config.to_json()


def test_a_route_without_mcp_renders_none() -> None:
    config = _render(_table_body(_route("proxmox")))
    assert config.routes[0].mcp is None


def test_a_fallback_to_itself_is_refused_by_the_api_server_and_the_parser(
    crd_check: CrdCheck,
) -> None:
    body = _table_body(_route("proxmox", {"fallbackRoute": "proxmox"}))
    assert crd_check(body) == [
        ".spec.routes[0]: target.mcp.fallbackRoute must name another route, not the route itself"
    ]
    with pytest.raises(api.InvalidSpecError) as error:
        api.parse(api.RouteTable, body)
    assert error.value.problems == [
        "spec.routes.0: target.mcp.fallbackRoute must name another route, not the route itself"
    ]
    fine = _table_body(_route("proxmox", {"fallbackRoute": "grafana"}))
    assert crd_check(fine) == []


def test_the_escalation_target_has_no_mcp() -> None:
    crd = load_crds()["RouterMesh"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    escalation = crd["properties"]["spec"]["properties"]["escalation"]["properties"]
    assert sorted(escalation["target"]["properties"]) == ["service", "url"]
    body = _mesh_body(escalation={"target": {"url": "http://cortex/v1", "mcp": {}}})
    with pytest.raises(api.InvalidSpecError) as error:
        api.parse(api.RouterMesh, body)
    assert error.value.problems == ["spec.escalation.target.mcp: Extra inputs are not permitted"]


def test_a_fallback_that_names_no_route_of_the_mesh_is_a_clear_render_error() -> None:
    table = _table_body(_route("proxmox", {"fallbackRoute": "nowhere"}), _route("grafana"))
    with pytest.raises(RenderError) as error:
        _render(table)
    assert str(error.value) == (
        "RouteTable tools/servers: route 'proxmox': target.mcp.fallbackRoute 'nowhere' must "
        "name another route of the mesh (in any of its RouteTables) or its escalation route "
        "'cortex'"
    )


def test_a_fallback_may_name_a_route_of_another_table_or_the_escalation_route() -> None:
    first = _table_body(_route("proxmox", {"fallbackRoute": "grafana"}), name="a")
    second = _table_body(_route("grafana", {"fallbackRoute": "cortex"}), name="b")
    config = _render(first, second, routeTables={"names": ["a", "b"]})
    assert {r.name: r.mcp.fallback_route for r in config.routes if r.mcp} == {
        "proxmox": "grafana",
        "grafana": "cortex",
    }


def test_a_config_the_contract_refuses_is_one_line_without_the_input_dump() -> None:
    table = _table_body(_route("grafana"), _route("grafana-logs"))
    with pytest.raises(RenderError) as error:
        _render(table)
    assert str(error.value) == (
        "route name 'grafana' begins 'grafana-logs': the layers tell routes apart by the "
        "first token of their names; rename one"
    )


def test_a_refused_fallback_surfaces_as_the_meshs_stalled_condition() -> None:
    table = _table_body(_route("proxmox", {"fallbackRoute": "nowhere"}))
    result = parse_and_render(_mesh_body(), [table], NOW)
    assert isinstance(result, Result)
    stalled = next(c for c in result.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "RenderFailed"
    assert stalled["message"].startswith("RouteTable tools/servers: route 'proxmox'")
    assert result.events[0][:2] == ("Warning", "RenderFailed")


# --- the credentials in the Deployment -------------------------------------------------------


def _shared_secret_config() -> tuple[api.RouterMesh, rc.RouterConfig]:
    table = _table_body(
        _route("proxmox", {"credentialsSecretRef": {"name": "mcp-tokens", "key": "proxmox"}}),
        _route("grafana", {"credentialsSecretRef": {"name": "mcp-tokens", "key": "grafana"}}),
        _route("unifi", {"credentialsSecretRef": {"name": "unifi.creds", "key": "token"}}),
        _route("loki", {"credentialsSecretRef": {"name": "mcp-tokens", "key": "grafana"}}),
        _route("plain", {}),
        _route("nomcp"),
    )
    mesh = api.parse(api.RouterMesh, _mesh_body())
    return mesh, render_config(mesh, [api.parse(api.RouteTable, table)])


def test_each_secret_is_mounted_once_with_only_the_keys_routes_name() -> None:
    mesh, config = _shared_secret_config()
    assert {r.name: r.mcp.credentials_file for r in config.routes if r.mcp} == {
        "proxmox": f"{SECRETS}/mcp-tokens/proxmox",
        "grafana": f"{SECRETS}/mcp-tokens/grafana",
        "unifi": f"{SECRETS}/unifi.creds/token",
        "loki": f"{SECRETS}/mcp-tokens/grafana",
        "plain": None,
    }
    pod = b.build_deployment(mesh, config)["spec"]["template"]["spec"]
    mcp_volumes = [v for v in pod["volumes"] if v["name"].startswith("secret-mcp-")]
    assert [v["secret"] for v in mcp_volumes] == [
        {
            "secretName": "mcp-tokens",
            "items": [
                {"key": "grafana", "path": "grafana"},
                {"key": "proxmox", "path": "proxmox"},
            ],
            "optional": True,
        },
        {
            "secretName": "unifi.creds",
            "items": [{"key": "token", "path": "token"}],
            "optional": True,
        },
    ]
    orchestrator = pod["containers"][0]
    mounts = [m for m in orchestrator["volumeMounts"] if m["name"].startswith("secret-mcp-")]
    assert [(m["mountPath"], m["readOnly"]) for m in mounts] == [
        (f"{SECRETS}/mcp-tokens", True),
        (f"{SECRETS}/unifi.creds", True),
    ]
    assert [m["name"] for m in mounts] == [v["name"] for v in mcp_volumes]
    assert len({v["name"] for v in pod["volumes"]}) == len(pod["volumes"])
    # Only the orchestrator talks to the servers: the model servers get no token.
    for container in pod["containers"][1:]:
        assert all(
            not m["mountPath"].startswith(SECRETS) for m in container.get("volumeMounts", [])
        )


@pytest.mark.parametrize("version", VERSIONS)
def test_the_deployment_with_mcp_credentials_validates_upstream(version: str) -> None:
    mesh, config = _shared_secret_config()
    kubernetes_validate.validate(b.build_deployment(mesh, config), version, strict=True)


def test_without_credentials_there_is_no_mcp_volume() -> None:
    mesh = api.parse(api.RouterMesh, _mesh_body())
    config = render_config(mesh, [api.parse(api.RouteTable, _table_body(_route("a", {})))])
    pod = b.build_deployment(mesh, config)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"] if v["name"].startswith("secret-mcp")] == []


# --- RouterMesh status ----------------------------------------------------------------------


def _mcp_entry(
    url: str, available: bool = True, refreshed: str | None = NOW, **more: Any
) -> dict[str, Any]:
    return {
        "url": url,
        "available": available,
        "tools": more.pop("tools", 2),
        "tool_names": more.pop("tool_names", ["list_vms", "restart_vm"]),
        "refreshed_at": refreshed,
        **more,
    }


def _pod(**mcp: dict[str, Any]) -> ReadinessReport:
    return ReadinessReport.model_validate(
        {"ready": True, "checks": {"config": True}, "config_hash": "h", "mcp": mcp}
    )


PROXMOX = "http://proxmox.mcp.svc:8080/mcp"
GRAFANA = "http://grafana.mcp.svc:8080/mcp"
MCP_TABLE = _table_body(
    _route("proxmox", {"fallbackRoute": "grafana"}), _route("grafana", {}), _route("nomcp")
)


def _config() -> rc.RouterConfig:
    return _render(MCP_TABLE)


def test_each_route_takes_the_freshest_report_and_is_down_only_when_every_pod_says_so() -> None:
    reports = [
        _pod(
            proxmox=_mcp_entry(PROXMOX, False, LATER, tools=0, tool_names=[], last_error="refused"),
            grafana=_mcp_entry(GRAFANA, False, NOW, last_error="timed out"),
        ),
        _pod(
            proxmox=_mcp_entry(PROXMOX, True, NOW, server="proxmox-mcp 1.2"),
            grafana=_mcp_entry(GRAFANA, False, None, tools=0, tool_names=[], last_error="reset"),
        ),
        # A pod still on an older config reports another URL: left out.
        _pod(grafana=_mcp_entry("http://old/mcp", True, LATEST)),
        # A route that is not in the config (or has no mcp) is not reported.
        _pod(nomcp=_mcp_entry("http://nomcp.mcp.svc:8080/mcp"), gone=_mcp_entry("http://x/")),
    ]
    servers = [
        s.model_dump(by_alias=True, exclude_none=True) for s in mcp_servers(_config(), reports)
    ]
    assert servers == [
        {
            "route": "proxmox",
            "url": PROXMOX,
            "available": True,  # the second pod reaches it
            "tools": 0,
            "refreshedAt": LATER,
            "lastError": "refused",
        },
        {
            "route": "grafana",
            "url": GRAFANA,
            "available": False,
            "tools": 2,
            "toolNames": ["list_vms", "restart_vm"],
            "refreshedAt": NOW,
            "lastError": "timed out",
        },
    ]


def test_the_status_lists_are_capped_and_times_normalized() -> None:
    long = [f"tool_{i}" for i in range(40)]
    entry = _mcp_entry(
        PROXMOX,
        refreshed="2026-12-02T09:00:00.123456+01:00",
        tools=40,
        tool_names=long,
        last_error="x" * 5000,
        notes=[f"note {i}" for i in range(20)],
    )
    (server,) = mcp_servers(_config(), [_pod(proxmox=entry)])
    assert server.refreshed_at == "2026-12-02T08:00:00Z"
    assert server.tool_names == long[:32]
    assert server.last_error == "x" * 1021 + "..."
    assert server.notes == [f"note {i}" for i in range(16)]
    # What the operator writes passes the CRD's own limits.
    api.McpServerStatus.model_validate(server.model_dump())


def _facts(config: rc.RouterConfig, reports: Sequence[ReadinessReport | None]) -> Facts:
    up = DeploymentState(
        replicas=len(reports),
        ready_replicas=len(reports),
        updated_replicas=len(reports),
        available=True,
        current=True,
    )
    gate = gate_models(config, job="succeeded", running=None, deployment=None)
    on_config = [
        r.model_copy(update={"config_hash": config.config_hash}) if r is not None else None
        for r in reports
    ]
    return Facts(
        config=config, gate=gate, job="succeeded", job_message="", deployment=up, reports=on_config
    )


def _pass(
    body: dict[str, Any], reports: Sequence[ReadinessReport | None], now: str
) -> tuple[Result, dict[str, Any]]:
    config = _config()
    mesh = api.parse(api.RouterMesh, _mesh_body())
    result = mesh_result(body, mesh, _facts(config, reports), now)
    return result, {**body, "status": result.status}


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c["message"], c["lastTransitionTime"])
        for c in status["conditions"]
    }


def test_targets_available_its_events_and_ready_through_an_outage() -> None:
    body = _mesh_body()
    healthy = [_pod(proxmox=_mcp_entry(PROXMOX), grafana=_mcp_entry(GRAFANA))]
    result, body = _pass(body, healthy, NOW)
    conditions = _conditions(result.status)
    assert conditions["TargetsAvailable"] == (
        "True",
        "TargetsAvailable",
        "2 MCP server(s) answer",
        NOW,
    )
    assert conditions["Ready"][:2] == ("True", "Ready")
    assert [c["type"] for c in result.status["conditions"]][-1] == "Ready"
    assert [e for e in result.events if "Target" in e[1]] == []
    assert [s["route"] for s in result.status["mcpServers"]] == ["proxmox", "grafana"]

    down = [
        _pod(
            proxmox=_mcp_entry(PROXMOX, False, last_error="connection refused"),
            grafana=_mcp_entry(GRAFANA),
        )
    ]
    result, body = _pass(body, down, LATER)
    conditions = _conditions(result.status)
    assert conditions["TargetsAvailable"] == (
        "False",
        "TargetUnavailable",
        "1/2 MCP server(s) do not answer (routes proxmox): their requests go to their "
        "fallbackRoute or the escalation route",
        LATER,
    )
    # The router fails open while a server is down: Ready does not move.
    assert conditions["Ready"] == ("True", "Ready", "1 router pod(s) ready", NOW)
    assert result.events == [
        (
            "Warning",
            "TargetUnavailable",
            f"route proxmox: MCP server {PROXMOX} does not answer: connection refused; its "
            "requests go to grafana",
        )
    ]
    # Still down on the next pass: no new event, the transition time stays.
    result, body = _pass(body, down, LATEST)
    assert result.events == []
    assert _conditions(result.status)["TargetsAvailable"][3] == LATER

    result, body = _pass(body, healthy, LATEST)
    assert result.events == [
        (
            "Normal",
            "TargetAvailable",
            f"route proxmox: MCP server {PROXMOX} answers again (2 tools)",
        )
    ]
    assert _conditions(result.status)["TargetsAvailable"][:2] == ("True", "TargetsAvailable")
    assert _conditions(result.status)["TargetsAvailable"][3] == LATEST


def test_a_route_first_seen_down_is_announced_and_falls_back_to_the_escalation_route() -> None:
    down = [_pod(proxmox=_mcp_entry(PROXMOX), grafana=_mcp_entry(GRAFANA, False))]
    result, _ = _pass(_mesh_body(), down, NOW)
    assert result.events[0] == ("Normal", "Ready", "1 router pod(s) ready")
    assert result.events[1:] == [
        (
            "Warning",
            "TargetUnavailable",
            f"route grafana: MCP server {GRAFANA} does not answer; its requests go to cortex",
        )
    ]


def test_without_reports_there_is_no_condition_and_the_old_list_is_removed() -> None:
    result, body = _pass(_mesh_body(), [_pod(proxmox=_mcp_entry(PROXMOX))], NOW)
    assert "TargetsAvailable" in _conditions(result.status)
    result, body = _pass(body, [None], LATER)
    assert "TargetsAvailable" not in _conditions(result.status)
    assert result.status["mcpServers"] is None  # the merge patch deletes it
    result, _ = _pass({**body, "status": {}}, [None], LATER)
    assert "mcpServers" not in result.status


# --- RouteTable status ------------------------------------------------------------------------


def _mesh_with_servers(name: str, servers: list[dict[str, Any]]) -> dict[str, Any]:
    body = _mesh_body()
    body["metadata"]["name"] = name
    body["status"] = {"mcpServers": servers}
    return body


def test_the_table_shows_what_each_mesh_using_it_discovered() -> None:
    table = _table_body(
        _route("proxmox", {}, examples=EXAMPLES), _route("grafana", {}), _route("nomcp")
    )
    meshes = [
        _mesh_with_servers(
            "lab",
            [
                {
                    "route": "proxmox",
                    "url": PROXMOX,
                    "available": True,
                    "tools": 12,
                    "refreshedAt": NOW,
                },
                {
                    "route": "grafana",
                    "url": GRAFANA,
                    "available": False,
                    "tools": 0,
                    "lastError": "refused",
                },
            ],
        ),
        _mesh_with_servers(
            "edge",
            [
                # Its status predates a change of the target: not this route's server.
                {"route": "proxmox", "url": "http://old/mcp", "available": True, "tools": 3},
                {"route": "grafana", "available": True, "tools": 4, "bad": "shape"},
                {"route": "nomcp", "url": "http://nomcp/", "available": True, "tools": 1},
            ],
        ),
        _mesh_with_servers("unused", [{"route": "proxmox", "available": True, "tools": 9}]),
    ]
    meshes[2]["spec"]["routeTables"] = {"names": ["elsewhere"]}
    servers = mesh_servers(meshes)
    # An entry of an unknown shape is skipped, the rest of the mesh's list kept.
    assert {name: [s.route for s in entries] for name, entries in servers.items()} == {
        "lab": ["proxmox", "grafana"],
        "edge": ["proxmox", "nomcp"],
        "unused": ["proxmox"],
    }
    outcome = table_status(table, valid_meshes(meshes), NOW, servers)
    assert outcome.status["tools"] == [
        {"route": "proxmox", "mesh": "lab", "available": True, "tools": 12, "refreshedAt": NOW},
        {"route": "grafana", "mesh": "lab", "available": False, "tools": 0, "lastError": "refused"},
    ]
    assert outcome.status["usedBy"] == ["edge", "lab"]
    # Without the meshes' servers (or none discovered): no tools key at all.
    assert "tools" not in table_status(table, valid_meshes(meshes), NOW).status


def test_routes_whose_tools_are_discovered_need_no_examples_or_description() -> None:
    table = api.parse(
        api.RouteTable,
        _table_body(
            _route("proxmox", {}, description=""),
            _route("grafana", {"discoverTools": False}, description=""),
            _route("loki", description="", examples=EXAMPLES),
        ),
    )
    assert quality_warnings(table) == [
        "route 'grafana' has 0 example(s): add at least 5 varied requests (how people really "
        "ask) so it is recognised",
        "route 'grafana' has no description: say in plain words what requests belong to it "
        "(it is evidence for the router and the judges)",
        "route 'loki' has no description: say in plain words what requests belong to it (it "
        "is evidence for the router and the judges)",
    ]


class RecordingKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        self.patches.append((name, status))


async def test_the_writer_follows_the_meshes_status_and_writes_only_changes() -> None:
    kube, statuses = RecordingKube(), TableStatuses()
    table = _table_body(_route("proxmox", {}), name="servers")
    table["metadata"]["uid"] = "t-1"
    entry = {"route": "proxmox", "url": PROXMOX, "available": True, "tools": 5}
    meshes = [_mesh_with_servers("lab", [entry])]

    def post(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        raise AssertionError(f"no event expected: {reason}")

    assert await statuses.sync(kube, "tools", [table], meshes, post) == 1  # type: ignore[arg-type]
    assert kube.patches[-1][1]["tools"] == [
        {"route": "proxmox", "mesh": "lab", "available": True, "tools": 5}
    ]
    assert await statuses.sync(kube, "tools", [table], meshes, post) == 0  # type: ignore[arg-type]
    down = [_mesh_with_servers("lab", [{**entry, "available": False, "tools": 5}])]
    assert await statuses.sync(kube, "tools", [table], down, post) == 1  # type: ignore[arg-type]
    assert kube.patches[-1][1]["tools"] == [
        {"route": "proxmox", "mesh": "lab", "available": False, "tools": 5}
    ]
    gone = [_mesh_with_servers("lab", [])]
    assert await statuses.sync(kube, "tools", [table], gone, post) == 1  # type: ignore[arg-type]
    assert kube.patches[-1][1]["tools"] is None  # removed by the merge patch


def test_what_the_operator_writes_passes_the_crds(crd_check: CrdCheck) -> None:
    reports = [_pod(proxmox=_mcp_entry(PROXMOX, notes=["cut 3 tools"], server="pve 1.0"))]
    _, body = _pass(_mesh_body(), reports, NOW)
    assert crd_check(copy.deepcopy(body)) == []
    table = _table_body(_route("proxmox", {"fallbackRoute": "grafana"}), _route("grafana", {}))
    outcome = table_status(table, valid_meshes([body]), NOW, mesh_servers([body]))
    assert outcome.status["tools"][0]["mesh"] == "lab"
    assert crd_check({**table, "status": outcome.status}) == []

"""The emulator the operator's tests run against (tests/kmock_faithful.py) does server-side
apply as the API server does: each expectation below is the object and the
managedFields a real API server gives for the same writes (less its defaulting), written
out, so a merge-patch shortcut in the emulator fails here first."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kmock_faithful import (
    VERBS,
    ApplyError,
    Call,
    FaithfulEmulator,
    record_update,
    schemas,
    server_side_apply,
)

NOW = "2030-01-02T03:04:05Z"
LATER = "2030-01-02T03:04:06Z"


def _deployment(labels: dict[str, str], env: list[dict[str, str]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "labels": labels},
        "spec": {
            **spec,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "web:1", "env": env}]},
            },
        },
    }


def _apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str = "operator",
    *,
    force: bool = True,
    now: str = NOW,
) -> dict[str, Any]:
    return server_side_apply(live, config, manager=manager, force=force, now=now, schema=schemas())


def _update(live: dict[str, Any], new: dict[str, Any], manager: str, **kw: Any) -> dict[str, Any]:
    return record_update(
        live, new, manager=manager, api_version="apps/v1", now=LATER, schema=schemas(), **kw
    )


FIRST = _deployment(
    {"app": "web", "tier": "front"},
    [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    replicas=2,
)
SECOND = _deployment({"app": "web"}, [{"name": "A", "value": "1"}], replicas=2)
APP_KEY = 'k:{"name":"app"}'


def test_apply_creates_and_records_the_appliers_fields() -> None:
    created = _apply(None, FIRST)
    assert created["metadata"]["managedFields"] == [
        {
            "manager": "operator",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": NOW,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},  # a LabelSelector is an atomic map
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {
                            "f:containers": {
                                APP_KEY: {
                                    ".": {},
                                    "f:name": {},
                                    "f:image": {},
                                    "f:env": {
                                        'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}},
                                        'k:{"name":"B"}': {".": {}, "f:name": {}, "f:value": {}},
                                    },
                                }
                            }
                        },
                    },
                },
            },
        }
    ]


def test_a_field_the_applier_omits_now_is_removed() -> None:
    live = _apply(None, FIRST)
    after = _apply(live, SECOND, now=LATER)
    assert after["metadata"]["labels"] == {"app": "web"}
    assert after["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "web:1", "env": [{"name": "A", "value": "1"}]}
    ]
    fields = after["metadata"]["managedFields"][0]["fieldsV1"]
    assert fields["f:metadata"] == {"f:labels": {"f:app": {}}}
    assert fields["f:spec"]["f:template"]["f:spec"]["f:containers"][APP_KEY]["f:env"] == {
        'k:{"name":"A"}': {".": {}, "f:name": {}, "f:value": {}}
    }


def test_fields_of_another_manager_survive_the_appliers_next_apply() -> None:
    live = _apply(None, FIRST)
    labelled = _update(
        live,
        {
            **live,
            "metadata": {
                **live["metadata"],
                "labels": {"app": "web", "tier": "front", "team": "x"},
            },
        },
        "kubectl-label",
    )
    assert labelled["metadata"]["managedFields"][1] == {
        "manager": "kubectl-label",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": LATER,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}},
    }
    after = _apply(labelled, SECOND, now=LATER)
    assert after["metadata"]["labels"] == {"app": "web", "team": "x"}


def test_an_env_var_and_a_container_of_another_manager_stay_in_place() -> None:
    live = _apply(None, FIRST)
    containers = [
        {
            "name": "app",
            "image": "web:1",
            "env": [
                *FIRST["spec"]["template"]["spec"]["containers"][0]["env"],
                {"name": "DEBUG", "value": "1"},
            ],
        },
        {"name": "sidecar", "image": "proxy:1"},
    ]
    edited = {
        **live,
        "spec": {
            **live["spec"],
            "template": {**live["spec"]["template"], "spec": {"containers": containers}},
        },
    }
    edited = _update(live, edited, "kubectl-edit")
    grown = _deployment({"app": "web"}, [{"name": "A", "value": "2"}], replicas=2)
    grown["spec"]["template"]["spec"]["containers"].append({"name": "l1", "image": "web:1"})
    after = _apply(edited, grown, now=LATER)
    assert after["spec"]["template"]["spec"]["containers"] == [
        {
            "name": "app",
            "image": "web:1",
            "env": [{"name": "A", "value": "2"}, {"name": "DEBUG", "value": "1"}],
        },
        {"name": "sidecar", "image": "proxy:1"},
        {"name": "l1", "image": "web:1"},
    ]


def test_replicas_set_by_the_autoscaler_conflict_without_force_and_move_with_it() -> None:
    live = _apply(None, FIRST)
    scaled = _update(
        live, {**live, "spec": {**live["spec"], "replicas": 4}}, "kube-controller-manager"
    )
    # The scaler took the field: the applier no longer owns it.
    assert "f:replicas" not in scaled["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    assert scaled["metadata"]["managedFields"][1]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    with pytest.raises(ApplyError) as refused:
        _apply(scaled, SECOND, force=False, now=LATER)
    assert refused.value.status == 409
    assert refused.value.causes == [
        {
            "type": "FieldManagerConflict",
            "message": 'conflict with "kube-controller-manager" using apps/v1',
            "field": ".spec.replicas",
        }
    ]
    forced = _apply(scaled, SECOND, now=LATER)
    assert forced["spec"]["replicas"] == 2
    assert [e["manager"] for e in forced["metadata"]["managedFields"]] == ["operator"]


def test_replicas_the_applier_leaves_to_the_autoscaler_stay() -> None:
    live = _apply(None, FIRST)
    scaled = _update(
        live, {**live, "spec": {**live["spec"], "replicas": 4}}, "kube-controller-manager"
    )
    unscaled = _deployment({"app": "web"}, [{"name": "A", "value": "1"}])  # no replicas
    after = _apply(scaled, unscaled, now=LATER)
    assert after["spec"]["replicas"] == 4
    # Had the applier still owned it, omitting it removes it (the API server then puts
    # its default, 1, back; the emulator does no defaulting).
    assert "replicas" not in _apply(live, unscaled, now=LATER)["spec"]


def test_the_same_value_is_shared_and_outlives_one_of_its_appliers() -> None:
    live = _apply(None, FIRST)
    both = _apply(
        live, _deployment({"tier": "front"}, [{"name": "A", "value": "1"}]), "gitops", force=False
    )
    assert both["metadata"]["labels"] == {"app": "web", "tier": "front"}
    after = _apply(both, SECOND, now=LATER)
    assert after["metadata"]["labels"] == {"app": "web", "tier": "front"}  # gitops still owns it


def test_atomic_lists_are_replaced_whole_and_keys_take_their_default() -> None:
    policy: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"ingress": [{"ports": [{"port": 8080}]}, {"ports": [{"port": 9090}]}]},
    }
    live = _apply(None, policy)
    assert live["metadata"]["managedFields"][0]["fieldsV1"] == {"f:spec": {"f:ingress": {}}}
    policy["spec"]["ingress"] = [{"ports": [{"port": 8080}]}]
    assert _apply(live, policy)["spec"]["ingress"] == [{"ports": [{"port": 8080}]}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"ports": [{"name": "http", "port": 80}]},  # no protocol: TCP
    }
    fields = _apply(None, service)["metadata"]["managedFields"][0]["fieldsV1"]
    assert fields == {
        "f:spec": {
            "f:ports": {'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:name": {}, "f:port": {}}}
        }
    }


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": FaithfulEmulator}


@pytest.fixture
async def api(kmock: Any) -> Any:
    kmock.resources["apps/v1/deployments"] = kmock.ResourceInfo(
        kind="Deployment",
        singular="deployment",
        namespaced=True,
        verbs=VERBS,
        subresources={"status"},
    )
    return kmock


PATH = "/apis/apps/v1/namespaces/ns/deployments/web"
APPLY = {"Content-Type": "application/apply-patch+yaml"}


async def test_over_http_an_apply_creates_and_a_no_op_apply_writes_nothing(api: Any) -> None:
    created = await api.patch(PATH, params={"fieldManager": "operator"}, json=FIRST, headers=APPLY)
    assert created.status in (200, 201), await created.text()
    body = await created.json()
    version = body["metadata"]["resourceVersion"]
    assert body["metadata"]["labels"] == {"app": "web", "tier": "front"}
    # An apply that creates needs RBAC create as well as patch.
    assert [(c.verb, c.resource, c.namespace) for c in api.calls] == [
        ("patch", "deployments", "ns"),
        ("create", "deployments", "ns"),
    ]
    again = await api.patch(PATH, params={"fieldManager": "operator"}, json=FIRST, headers=APPLY)
    assert (await again.json())["metadata"]["resourceVersion"] == version
    smaller = await api.patch(PATH, params={"fieldManager": "operator"}, json=SECOND, headers=APPLY)
    assert (await smaller.json())["metadata"]["labels"] == {"app": "web"}
    assert dict(api.objects["apps/v1/deployments", "ns", "web"].raw)["metadata"]["labels"] == {
        "app": "web"
    }


async def test_over_http_what_the_api_server_refuses(api: Any) -> None:
    without_manager = await api.patch(PATH, json=FIRST, headers=APPLY)
    assert without_manager.status == 400
    await api.patch(PATH, params={"fieldManager": "operator"}, json=FIRST, headers=APPLY)
    scaled = await api.patch(
        PATH,
        params={"fieldManager": "hpa"},
        json={"spec": {"replicas": 4}},
        headers={"Content-Type": "application/merge-patch+json", "User-Agent": "hpa/1"},
    )
    assert scaled.status == 200
    conflict = await api.patch(
        PATH, params={"fieldManager": "operator", "force": "false"}, json=FIRST, headers=APPLY
    )
    assert conflict.status == 409
    assert '"hpa"' in (await conflict.json())["message"]
    strategic = await api.patch(
        PATH,
        json={"spec": {"replicas": 3}},
        headers={"Content-Type": "application/strategic-merge-patch+json", "User-Agent": "op/1"},
    )
    assert strategic.status == 415
    renamed = await api.patch(
        PATH,
        params={"fieldManager": "operator"},
        json={**FIRST, "metadata": {**FIRST["metadata"], "name": "other"}},
        headers=APPLY,
    )
    assert renamed.status == 400


async def test_over_http_status_and_the_object_are_written_apart(api: Any) -> None:
    await api.patch(PATH, params={"fieldManager": "operator"}, json=FIRST, headers=APPLY)
    generation = dict(api.objects["apps/v1/deployments", "ns", "web"].raw)["metadata"]["generation"]
    await api.patch(
        PATH + "/status", json={"status": {"readyReplicas": 1}, "spec": {"replicas": 9}}
    )
    await api.patch(
        PATH, json={"status": {"readyReplicas": 7}, "metadata": {"annotations": {"a": "b"}}}
    )
    stored = dict(api.objects["apps/v1/deployments", "ns", "web"].raw)
    assert stored["spec"]["replicas"] == 2 and stored["status"] == {"readyReplicas": 1}
    assert stored["metadata"]["annotations"] == {"a": "b"}
    assert stored["metadata"]["generation"] == generation  # neither changed the spec
    entries = [
        (e["manager"], e["operation"], e.get("subresource"))
        for e in stored["metadata"]["managedFields"]
    ]
    assert entries == [
        ("operator", "Apply", None),
        ("kmock", "Update", "status"),
        ("kmock", "Update", None),
    ]


def test_calls_tell_the_tests_requests_from_the_operators() -> None:
    mine = Call("get", "", "pods", "", "ns", "p", "kmock/0.8 aiohttp/3.13")
    theirs = Call("get", "", "pods", "", "ns", "p", "kopf/1.45.2")
    assert mine.by_test and not theirs.by_test

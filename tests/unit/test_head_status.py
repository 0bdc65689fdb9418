"""status.head of a RouterMesh with a trained head: from the training Job's phase and
what the ready pods report on /readyz (pure functions of the reconciler)."""

from __future__ import annotations

from typing import Any

import pytest

from routermesh.operator import api
from routermesh.operator import status as r
from routermesh.operator.conditions import JobPhase
from routermesh.runtime.contract import config as rc
from routermesh.runtime.contract.readiness import ReadinessReport

MESH = api.parse(
    api.RouterMesh,
    {
        "apiVersion": api.API_GROUP_VERSION,
        "kind": "RouterMesh",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"routeTables": {"names": ["t"]}, "layers": {"l0": {"head": {"enabled": True}}}},
    },
)
HEAD = rc.HeadConfig(
    base=rc.ModelRef(uri="hf://org/base", path="base-1"), path="heads/0123456789abcdef"
)


def _status(
    phase: JobPhase = "absent",
    reports: list[ReadinessReport] | None = None,
    *,
    active: bool = True,
    trained: bool = False,
    message: str = "",
) -> api.HeadStatus:
    status = r.head_status(
        MESH,
        head=HEAD,
        phase=phase,
        message=message,
        reports=reports or [],
        models_active=active,
        trained=trained,
    )
    assert status is not None
    return status


def _pod(state: str, path: str = HEAD.path, accuracy: float = 0.97) -> ReadinessReport:
    return ReadinessReport.model_validate(
        {
            "ready": True,
            "checks": {"config": True, "l0": True},
            "config_hash": "h",
            "heads": {"l0": {"state": state, "path": path, "holdout_accuracy": accuracy}},
        }
    )


def test_the_states_follow_the_job_and_the_pods() -> None:
    assert _status(active=False).state == "Pending"
    assert _status("running").state == "Training"
    assert _status("absent").state == "Training"  # the Job is about to be created
    failed = _status("failed", message="BackoffLimitExceeded")
    assert (failed.state, failed.message) == ("Failed", "BackoffLimitExceeded")
    assert _status("succeeded", trained=True).state == "Trained"
    loaded = _status("succeeded", [_pod("loaded"), _pod("pending")], trained=True)
    assert (loaded.state, loaded.pods, loaded.holdout_accuracy) == ("Loaded", 1, 0.97)
    assert loaded.job == r.b.training_job_name(MESH, HEAD)
    # A pod still on an older head does not count.
    older = _status("succeeded", [_pod("loaded", path="heads/fedcba9876543210")], trained=True)
    assert (older.state, older.pods) == ("Trained", 0)


@pytest.mark.parametrize(
    ("previous", "phase", "trained"),
    [
        ({}, "succeeded", True),
        ({}, "running", False),
        ({"head": {"path": HEAD.path, "state": "Loaded"}}, "absent", True),  # Job gone (TTL)
        ({"head": {"path": HEAD.path, "state": "Trained"}}, "absent", True),
        ({"head": {"path": "heads/other", "state": "Loaded"}}, "absent", False),  # new examples
        ({"head": {"path": HEAD.path, "state": "Failed"}}, "absent", False),
    ],
)
def test_a_trained_head_is_remembered_in_the_status(
    previous: dict[str, Any], phase: JobPhase, trained: bool
) -> None:
    assert r.head_trained({"status": previous}, HEAD, phase) is trained


def test_a_failure_is_announced_once() -> None:
    failed = _status("failed", message="OOMKilled")
    assert r.head_events({}, failed, "OOMKilled") == [("Warning", "TrainingFailed", "OOMKilled")]
    again = {"status": {"head": {"state": "Failed"}}}
    assert r.head_events(again, failed, "OOMKilled") == []
    assert r.head_events({}, _status("running"), "") == []


def test_adaptive_thresholds_come_from_the_pod_with_the_most_outcomes() -> None:
    def report(samples: int, threshold: float) -> ReadinessReport:
        return ReadinessReport(
            ready=True,
            checks={"config": True},
            config_hash="h",
            thresholds={
                "l0": {
                    "configured": 0.8,
                    "threshold": threshold,
                    "state": "adapted",
                    "samples": samples,
                    "accuracy": 0.98,
                    "reason": "fitted",
                    "updates": 1,
                }
            },
        )

    assert r.threshold_status([ReadinessReport(ready=True, checks={}, config_hash="h")]) is None
    statuses = r.threshold_status([report(10, 0.75), report(80, 0.7)])
    assert statuses is not None and len(statuses) == 1
    assert (statuses[0].layer, statuses[0].threshold, statuses[0].samples) == ("l0", 0.7, 80)
    status = api.RouterMeshStatus(thresholds=statuses)
    dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["thresholds"][0]["configured"] == 0.8
    # A pod of another version reporting another shape: that entry is dropped, the rest of
    # its report (the config hash ConfigApplied counts) still reads.
    odd = ReadinessReport.model_validate_json(
        '{"ready": true, "checks": {"config": true}, "config_hash": "h",'
        ' "thresholds": {"l0": {"threshold": "high"}, "l1": 3},'
        ' "heads": {"l0": {"state": "exploded"}}}'
    )
    assert (odd.config_hash, odd.thresholds, odd.heads) == ("h", {}, {})
    assert r.threshold_status([odd]) is None


def test_a_tuned_encoder_says_its_mode_and_holds_nothing_out() -> None:
    tuned = HEAD.model_copy(update={"mode": "encoder"})
    pod = ReadinessReport.model_validate(
        {
            "ready": True,
            "checks": {"config": True, "l0": True},
            "config_hash": "h",
            "heads": {
                "l0": {
                    "state": "loaded",
                    "path": HEAD.path,
                    "mode": "encoder",
                    "generic_rows": 300,
                }
            },
        }
    )
    status = r.head_status(
        MESH,
        head=tuned,
        phase="succeeded",
        message="",
        reports=[pod],
        models_active=True,
        trained=True,
    )
    assert status is not None
    assert (status.state, status.mode, status.holdout_accuracy) == ("Loaded", "encoder", None)
    assert status.generic_rows == 300 and status.wire()["genericRows"] == 300
    assert _status().mode == "head" and _status().generic_rows is None

"""RouterMesh status conditions from observed state: table-driven over the lifecycle."""

from __future__ import annotations

import pytest

from routermesh.operator.api import Condition
from routermesh.operator.conditions import DeploymentState, Observed, evaluate

NOW, EARLIER = "2026-11-26T12:00:00Z", "2026-11-26T11:00:00Z"
UP = DeploymentState(replicas=2, ready_replicas=2, updated_replicas=2, available=True, current=True)
ROLLING = DeploymentState(
    replicas=2, ready_replicas=1, updated_replicas=1, available=True, current=False
)
DOWN = DeploymentState(
    replicas=1, ready_replicas=0, updated_replicas=1, available=False, current=True
)


def _summary(observed: Observed) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in evaluate(observed, [], NOW)}


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (
            Observed(generation=1, problem="spec.layers.l1.threshold: must be <= 1"),
            {"Stalled": ("True", "InvalidSpec"), "Ready": ("False", "InvalidSpec")},
        ),
        (
            Observed(generation=1, job="running"),
            {
                "ModelsReady": ("False", "Downloading"),
                "Available": ("False", "NoDeployment"),
                "ConfigApplied": ("False", "NoPods"),
                "Reconciling": ("True", "Downloading"),
                "Ready": ("False", "Downloading"),
            },
        ),
        (
            Observed(generation=2, job="failed", job_message="sha256 mismatch"),
            {
                "ModelsReady": ("False", "DownloadFailed"),
                "Available": ("False", "NoDeployment"),
                "ConfigApplied": ("False", "NoPods"),
                "Stalled": ("True", "DownloadFailed"),
                "Ready": ("False", "DownloadFailed"),
            },
        ),
        (
            Observed(
                generation=3,
                job="succeeded",
                models_active=True,
                deployment=ROLLING,
                pods_expected=2,
                pods_on_config=1,
                pods_reporting=2,
            ),
            {
                "ModelsReady": ("True", "ModelsDownloaded"),
                "Available": ("True", "MinimumReplicasAvailable"),
                "ConfigApplied": ("False", "ConfigPending"),
                "Reconciling": ("True", "ConfigPending"),
                "Ready": ("False", "ConfigPending"),
            },
        ),
        (
            Observed(
                generation=3,
                job="succeeded",
                models_active=True,
                deployment=DOWN,
                pods_on_config=0,
                pods_reporting=0,
            ),
            {
                "ModelsReady": ("True", "ModelsDownloaded"),
                "Available": ("False", "ReplicasUnavailable"),
                "ConfigApplied": ("False", "NoPods"),
                "Reconciling": ("True", "ReplicasUnavailable"),
                "Ready": ("False", "ReplicasUnavailable"),
            },
        ),
        (
            Observed(
                generation=4,
                job="absent",  # finished and cleaned up after its TTL
                models_active=True,
                deployment=UP,
                pods_expected=2,
                pods_on_config=2,
                pods_reporting=2,
            ),
            {
                "ModelsReady": ("True", "ModelsDownloaded"),
                "Available": ("True", "MinimumReplicasAvailable"),
                "ConfigApplied": ("True", "ConfigLoaded"),
                "Ready": ("True", "Ready"),
            },
        ),
    ],
)
def test_conditions_through_the_lifecycle(
    observed: Observed, expected: dict[str, tuple[str, str]]
) -> None:
    assert _summary(observed) == expected


def test_a_rollout_in_progress_is_not_ready_yet() -> None:
    observed = Observed(
        generation=7,
        models_active=True,
        deployment=ROLLING,
        pods_expected=2,
        pods_on_config=2,
        pods_reporting=2,
    )
    summary = _summary(observed)
    assert summary["Ready"] == ("False", "RollingOut")
    assert summary["Reconciling"] == ("True", "RollingOut")
    assert summary["Available"] == ("True", "MinimumReplicasAvailable")


def test_a_stuck_rollout_is_a_failure_not_progress() -> None:
    stuck = DeploymentState(
        replicas=2, ready_replicas=0, updated_replicas=2, available=False, current=True, stuck=True
    )
    observed = Observed(generation=6, models_active=True, deployment=stuck)
    assert _summary(observed) == {
        "ModelsReady": ("True", "ModelsDownloaded"),
        "Available": ("False", "ProgressDeadlineExceeded"),
        "ConfigApplied": ("False", "NoPods"),
        "Ready": ("False", "ProgressDeadlineExceeded"),
    }


def test_transition_times_change_only_with_the_status() -> None:
    previous = [
        Condition(type="Ready", status="True", last_transition_time=EARLIER, reason="Ready"),
        Condition(type="ModelsReady", status="False", last_transition_time=EARLIER, reason="X"),
    ]
    observed = Observed(
        generation=5,
        models_active=True,
        deployment=UP,
        pods_expected=1,
        pods_on_config=1,
        pods_reporting=1,
    )
    times = {c.type: c.last_transition_time for c in evaluate(observed, previous, NOW)}
    assert times["Ready"] == EARLIER  # still True: unchanged
    assert times["ModelsReady"] == NOW  # False -> True
    assert all(c.observed_generation == 5 for c in evaluate(observed, previous, NOW))


def test_messages_are_for_humans() -> None:
    observed = Observed(
        generation=1,
        models_active=True,
        deployment=UP,
        config_hash="ab" * 32,
        pods_expected=2,
        pods_on_config=1,
        pods_reporting=2,
    )
    ready = next(c for c in evaluate(observed, [], NOW) if c.type == "Ready")
    assert ready.message == "1/2 pods run config abababababab"


@pytest.mark.parametrize(
    ("expected", "on_config", "reporting", "applied", "message"),
    [
        (3, 1, 1, ("False", "ConfigPending"), "1/3 pods run config abababababab (2 not answering)"),
        (3, 2, 2, ("False", "ConfigPending"), "2/3 pods run config abababababab (1 not answering)"),
        (3, 2, 3, ("False", "ConfigPending"), "2/3 pods run config abababababab"),
        (3, 0, 0, ("False", "ConfigPending"), "0/3 pods run config abababababab (3 not answering)"),
        (3, 3, 3, ("True", "ConfigLoaded"), "3 pod(s) run config abababababab"),
        (0, 0, 0, ("False", "NoPods"), "no router pod reports config abababababab"),
    ],
)
def test_config_is_applied_only_when_every_ready_replica_reports_it(
    expected: int, on_config: int, reporting: int, applied: tuple[str, str], message: str
) -> None:
    observed = Observed(
        generation=1,
        models_active=True,
        deployment=UP,
        config_hash="ab" * 32,
        pods_expected=expected,
        pods_on_config=on_config,
        pods_reporting=reporting,
    )
    condition = next(c for c in evaluate(observed, [], NOW) if c.type == "ConfigApplied")
    assert (condition.status, condition.reason) == applied
    assert condition.message == message

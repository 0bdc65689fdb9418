"""The CPUs a process may use: the affinity capped by the container's CPU limit (cgroup
v2 and v1 as the kubelet writes them), and L0's encoder threads sized by it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from routermesh.runtime.cpus import available_cpus
from routermesh.runtime.encoder import encoder_threads

AFFINITY = len(os.sched_getaffinity(0))


def _v2(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: str, period: str = "100000") -> Path:
    (root / "cpu").mkdir(parents=True, exist_ok=True)
    (root / "cpu/cpu.cfs_quota_us").write_text(quota)
    (root / "cpu/cpu.cfs_period_us").write_text(period)
    return root


def test_a_cgroup_v2_limit_caps_the_cpus(tmp_path: Path) -> None:
    assert available_cpus(_v2(tmp_path / "one", "100000 100000\n")) == 1
    assert available_cpus(_v2(tmp_path / "half", "50000 100000\n")) == 1
    assert available_cpus(_v2(tmp_path / "max", "max 100000\n")) == AFFINITY


def test_a_cgroup_v1_quota_caps_the_cpus(tmp_path: Path) -> None:
    assert available_cpus(_v1(tmp_path / "one", "100000")) == 1
    assert available_cpus(_v1(tmp_path / "none", "-1")) == AFFINITY


def test_no_cgroup_files_leave_the_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path) == AFFINITY


def test_a_limit_above_the_affinity_changes_nothing(tmp_path: Path) -> None:
    assert available_cpus(_v2(tmp_path, f"{(AFFINITY + 8) * 100000} 100000")) == AFFINITY


def test_the_encoder_uses_the_cpus_it_may_up_to_four(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_MESH_L0_THREADS", raising=False)
    assert [encoder_threads(cpus) for cpus in (1, 2, 3, 8)] == [1, 2, 3, 4]
    monkeypatch.setenv("ROUTER_MESH_L0_THREADS", "3")
    assert encoder_threads(2) == 3

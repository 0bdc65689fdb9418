"""How many CPUs this process may really use: the CPUs it may run on, capped by the
container's CPU limit (a cgroup quota). In a pod, ``os.sched_getaffinity`` sees the
node's cores while the limit allows a few: a thread pool sized by the node would be
throttled by the quota (a 1-CPU orchestrator running four encoder threads waits for
the next quota period)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _quota_cpus(cgroup: Path) -> float | None:
    """The CPU limit as a number of CPUs (cgroup v2 ``cpu.max``, or v1's CFS quota), None
    without one."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu/cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(cgroup: Path = CGROUP) -> int:
    """Whole CPUs this process may use (at least 1): a limit of 1.5 CPUs gives 2."""
    cpus = len(os.sched_getaffinity(0))
    quota = _quota_cpus(cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)

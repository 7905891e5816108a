"""How many CPUs this process may use: what `http.workers: 0` (one worker per core) counts.

`os.cpu_count()` counts the machine's CPUs, which in a container limited to two CPUs may be
sixty-four: sixty-four workers would then share two CPUs' worth of time and memory for nothing.
This counts the CPUs the process may run on (its affinity, which cpusets narrow) and the CPU time
its cgroup grants (a Kubernetes CPU limit), whichever is fewer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: cgroup v2 `cpu.max` ("max 100000" or "<quota> <period>") and cgroup v1's pair of files.
CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def usable_cpus() -> int:
    """At least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota() -> float | None:
    """The CPUs' worth of time the cgroup grants (1.5 for "150000 100000"); None when unlimited
    or unknown."""
    try:
        fields = CGROUP_V2_MAX.read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return _ratio(fields[0], fields[1])
        return None
    except OSError:
        pass
    try:
        return _ratio(CGROUP_V1_QUOTA.read_text().strip(), CGROUP_V1_PERIOD.read_text().strip())
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # v1 says -1 for no limit

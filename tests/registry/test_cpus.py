"""`http.workers: 0` starts one worker per CPU this process may use: in a container limited to two
CPUs on a big machine that is two, not the machine's count."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from registry import cpus
from tests.support.servers import start_cargobay


@pytest.fixture
def cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cgroup files in a temp dir instead of /sys/fs/cgroup."""
    monkeypatch.setattr(cpus, "CGROUP_V2_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(cpus, "CGROUP_V1_QUOTA", tmp_path / "cfs_quota_us")
    monkeypatch.setattr(cpus, "CGROUP_V1_PERIOD", tmp_path / "cfs_period_us")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    return tmp_path


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "200000 100000\n"}, 2),          # a Kubernetes limit of 2 CPUs (cgroup v2)
    ({"cpu.max": "150000 100000\n"}, 2),          # 1.5 CPUs: a second worker still has half a CPU
    ({"cpu.max": "50000 100000\n"}, 1),           # half a CPU: never fewer than one worker
    ({"cpu.max": "max 100000\n"}, 64),            # no limit: the CPUs the process may run on
    ({"cfs_quota_us": "300000\n", "cfs_period_us": "100000\n"}, 3),  # cgroup v1
    ({"cfs_quota_us": "-1\n", "cfs_period_us": "100000\n"}, 64),     # v1 without a limit
    ({}, 64),                                     # no cgroup files at all
    ({"cpu.max": "garbage\n"}, 64),               # unreadable: no limit assumed, no crash
])
def test_workers_follow_the_cpu_limit(cgroup: Path, files: dict[str, str], expected: int) -> None:
    for name, text in files.items():
        (cgroup / name).write_text(text)
    assert cpus.usable_cpus() == expected


def test_affinity_narrows_the_count(cgroup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # taskset / a cpuset
    assert cpus.usable_cpus() == 3


def test_the_default_is_one_worker_per_usable_cpu(tmp_path: Path) -> None:
    server = start_cargobay(tmp_path, workers=None, inherit_settings=False)
    try:
        expected = cpus.usable_cpus()
        # uvicorn's workers are the server's children; with one worker it serves in the process itself.
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        serving = [pid for pid in children  # not multiprocessing's resource tracker beside them
                   if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert (len(serving) if expected > 1 else 1) == expected, (children, server.log())
        assert httpx.get(f"{server.url}/v2/").status_code == 200
    finally:
        server.stop()

"""Quotas (policy.quotas) against real `registry serve` processes: a push past a quota is 403 DENIED
naming the quota, its usage and the size asked, before the blob becomes visible, whichever replica
it reaches; blobs the quota counts already (shared layers, mounts) are always allowed; content from
before the quota was configured counts; `registry usage` prints the same numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.servers import REPO_ROOT, RunningServer, start_cargobay

from .helpers import assert_error, sha256, upload

LIMIT = 10_000


def _config(root: Path, *globs: str) -> dict[str, object]:
    return {"storage": {"filesystem": {"root": str(root)}},
            "policy": {"quotas": [{"repositories": glob, "limit": LIMIT} for glob in globs]}}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, RunningServer, Path]]:
    """Two servers over one store (the third item, its root) with the quotas `qa/*`, `qb/*` and `qc/*`
    (10,000 bytes each)."""
    work = tmp_path_factory.mktemp("quotas")
    config = _config(work / "data", "qa/*", "qb/*", "qc/*")
    first = start_cargobay(work / "one", config=config)
    try:
        second = start_cargobay(work / "two", config=config)
    except BaseException:
        first.stop()
        raise
    yield first, second, work / "data"
    second.stop()
    first.stop()


def _denied(response: httpx.Response) -> dict[str, object]:
    assert_error(response, 403, "DENIED")
    [entry] = response.json()["errors"]
    detail: dict[str, object] = entry["detail"]
    return {"message": entry["message"], **detail}


def _usage(root: Path, *args: str, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    config_path = root.parent / "usage-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "registry", "usage", "--config", str(config_path), *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def test_a_blob_past_the_quota_is_refused_on_every_replica_and_never_becomes_visible(
        replicas: tuple[RunningServer, RunningServer, Path]) -> None:
    first, second, _ = replicas
    with httpx.Client(base_url=first.url, timeout=30) as one, httpx.Client(base_url=second.url, timeout=30) as two:
        upload(one, "qa/app", os.urandom(6000))
        big = os.urandom(5000)

        # Monolithic, through the other replica: the usage the first wrote counts there.
        refused = _denied(two.post("/v2/qa/tools/blobs/uploads/", params={"digest": sha256(big)}, content=big))
        assert refused["quota"] == "qa/*" and (refused["used"], refused["limit"], refused["requested"]) == (
            6000, LIMIT, 5000)
        assert "qa/*" in str(refused["message"]) and "5.9 KiB" in str(refused["message"])
        assert "4.9 KiB" in str(refused["message"])

        # Chunked: refused at the PUT that would link it, and the upload is gone.
        start = one.post("/v2/qa/tools/blobs/uploads/")
        location = start.headers["location"]
        assert one.patch(location, content=big, headers={"content-type": "application/octet-stream"}).status_code == 202
        _denied(one.put(location, params={"digest": sha256(big)}))
        assert one.get(location).status_code == 404
        for client in (one, two):
            assert client.head(f"/v2/qa/tools/blobs/{sha256(big)}").status_code == 404

        # Other quotas and repositories no quota covers are not affected.
        upload(two, "qb/app", big)
        upload(two, "elsewhere/app", os.urandom(LIMIT * 2))


def test_blobs_the_quota_counts_already_are_allowed_and_a_mount_is_checked(
        replicas: tuple[RunningServer, RunningServer, Path]) -> None:
    first, second, root = replicas
    base, outside = os.urandom(7000), os.urandom(4000)
    with httpx.Client(base_url=first.url, timeout=30) as one, httpx.Client(base_url=second.url, timeout=30) as two:
        digest = upload(one, "qc/app", base)
        upload(two, "qc/tools", base)  # the same layer again, in another repository: counted once
        mounted = two.post("/v2/qc/more/blobs/uploads/", params={"mount": digest, "from": "qc/app"})
        assert mounted.status_code == 201, mounted.text
        assert one.get(f"/v2/qc/more/blobs/{digest}").content == base

        foreign = upload(one, "other/base", outside)
        refused = _denied(one.post("/v2/qc/app/blobs/uploads/", params={"mount": foreign, "from": "other/base"}))
        assert (refused["used"], refused["requested"]) == (7000, 4000)
        assert one.head(f"/v2/qc/app/blobs/{foreign}").status_code == 404
        assert upload(one, "qc/app", os.urandom(3000))  # exactly at the limit is allowed

    out = _usage(root, "qc", config=_config(root, "qa/*", "qb/*", "qc/*"))
    assert out.returncode == 0, out.stderr
    [row] = [line.split() for line in out.stdout.splitlines() if line.startswith("qc/*")]
    assert row[1:3] == ["9.8", "KiB"] and row[-1] == "2"  # 10,000 bytes in two unique blobs


def test_content_pushed_before_the_quota_counts(tmp_path: Path) -> None:
    root = tmp_path / "data"
    server = start_cargobay(tmp_path / "before", root=root)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            upload(client, "old/app", os.urandom(8000))
    finally:
        server.stop()

    out = _usage(root, config=_config(root, "old/*"))
    assert out.returncode == 0, out.stderr
    assert "rebuilt old/*" in out.stderr  # never counted: rebuilt from the tree first
    assert "7.8 KiB" in out.stdout

    server = start_cargobay(tmp_path / "after", config=_config(root, "old/*"))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            data = os.urandom(3000)
            refused = _denied(client.post("/v2/old/new/blobs/uploads/", params={"digest": sha256(data)},
                                          content=data))
            assert refused["used"] == 8000
    finally:
        server.stop()


def test_usage_of_a_prefix_no_quota_covers_is_measured_and_a_bad_glob_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    server = start_cargobay(tmp_path / "srv", root=root)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            shared = os.urandom(2048)
            upload(client, "free/a", shared)
            upload(client, "free/b/c", shared)
            upload(client, "freedom/x", os.urandom(999))
    finally:
        server.stop()

    out = _usage(root, "free", config=_config(root, "paid/*"))
    assert out.returncode == 0, out.stderr
    [row] = [line.split() for line in out.stdout.splitlines() if line.startswith("free/*")]
    assert row[1:3] == ["2.0", "KiB"] and row[-1] == "1"  # free/a and free/b/c share it; freedom/x is not below
    assert "measured from the tree" in out.stderr

    config = _config(root, "Team A/*")
    bad = _usage(root, config=config)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "policy.quotas[0].repositories" in bad.stderr

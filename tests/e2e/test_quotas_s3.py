"""Quotas behind two replicas over SeaweedFS: usage one replica counted refuses a push through the
other, a shared blob is allowed, deleting a blob gives its bytes back, and `registry usage` (with
and without --rebuild) reads the same numbers from the bucket."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.registry.helpers import assert_error, sha256, upload
from tests.support.s3replicas import s3_config, s3_env, start_replicas, stop_all
from tests.support.s3servers import S3Server
from tests.support.servers import REPO_ROOT, RunningServer

from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

LIMIT = 10_000
QUOTAS = {"policy": {"quotas": [{"repositories": "s3q/*", "limit": LIMIT}]}}


@pytest.fixture(scope="module")
def s3_setup(tmp_path_factory: pytest.TempPathFactory, seaweedfs: S3Server, s3_bucket: str  # noqa: F811
             ) -> Iterator[tuple[list[RunningServer], dict[str, Any], dict[str, str]]]:
    servers = start_replicas(tmp_path_factory.mktemp("quota-replicas"), seaweedfs, s3_bucket, 2, config=QUOTAS)
    yield servers, {**s3_config(seaweedfs, s3_bucket), **QUOTAS}, s3_env(seaweedfs)
    stop_all(servers)


def _usage(tmp_path: Path, config: dict[str, Any], env: dict[str, str], *args: str) -> list[str]:
    config_path = tmp_path / "usage.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "registry", "usage", "--config", str(config_path), *args],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    [row] = [line.split() for line in out.stdout.splitlines() if line.startswith("s3q/*")]
    return row


def test_quota_across_replicas_over_s3(s3_setup: tuple[list[RunningServer], dict[str, Any], dict[str, str]],
                                       tmp_path: Path) -> None:
    (a, b), config, env = s3_setup
    base, extra = os.urandom(6000), os.urandom(5000)
    with httpx.Client(base_url=a.url, timeout=30) as one, httpx.Client(base_url=b.url, timeout=30) as two:
        digest = upload(one, "s3q/app", base)
        refused = two.post("/v2/s3q/tools/blobs/uploads/", params={"digest": sha256(extra)}, content=extra)
        assert_error(refused, 403, "DENIED")
        assert refused.json()["errors"][0]["detail"]["used"] == 6000
        upload(two, "s3q/tools", base)  # shared: counted already

        assert _usage(tmp_path, config, env)[-1] == "1"
        assert _usage(tmp_path, config, env, "--rebuild")[1:3] == ["5.9", "KiB"]

        # Deleting the blob from both repositories gives its bytes back to the quota.
        assert one.delete(f"/v2/s3q/app/blobs/{digest}").status_code == 202
        assert two.delete(f"/v2/s3q/tools/blobs/{digest}").status_code == 202
        assert _usage(tmp_path, config, env)[1:3] == ["0", "B"]
        upload(two, "s3q/tools", extra)

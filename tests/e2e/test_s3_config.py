"""`registry serve` on S3 from settings: the secret from CARGOBAY_STORAGE_S3_SECRET_KEY or the AWS
environment, and a wrong bucket, bad credentials or an unreachable endpoint stop it at start with
one line on stderr and exit status 2."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.s3replicas import s3_config
from tests.support.s3servers import S3Server
from tests.support.servers import REPO_ROOT, free_port, start_cargobay

from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures


def serve(tmp_path: Path, config: dict, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CARGOBAY_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "registry", "serve", "--config", str(path),
                           "--port", str(free_port())],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
                          env={**clean, "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path), **env})


@pytest.mark.parametrize("change,secret,line", [
    ({"bucket": "no-such-bucket"}, "right",
     r"registry: S3 bucket 'no-such-bucket' at http://127\.0\.0\.1:\d+ does not exist"),
    ({}, "wrong",
     r"registry: S3 credentials were rejected for bucket '[\w-]+' at http://\S+ \(SignatureDoesNotMatch\)"),
    ({"access_key": ""}, "none", r"registry: no S3 credentials: .*"),
    ({"endpoint_url": "http://127.0.0.1:9"}, "right",
     r"registry: S3 endpoint for bucket '[\w-]+' at http://127\.0\.0\.1:9 is unreachable: \w+"),
], ids=["wrong-bucket", "wrong-secret", "no-credentials", "unreachable"])
def test_unusable_s3_stops_serve_with_one_line(tmp_path: Path, seaweedfs: S3Server, s3_bucket: str,  # noqa: F811
                                               change: dict, secret: str, line: str) -> None:
    config = s3_config(seaweedfs, s3_bucket, max_attempts=1, connect_timeout=2)
    config["storage"]["s3"].update(change)
    value = {"right": seaweedfs.secret_key, "wrong": "not-the-secret", "none": ""}[secret]
    result = serve(tmp_path, config, {"CARGOBAY_STORAGE_S3_SECRET_KEY": value} if value else {})
    assert result.returncode == 2, result.stderr[-2000:]
    assert re.fullmatch(line, result.stderr.strip()), result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert seaweedfs.secret_key not in result.stderr


def test_credentials_from_the_standard_aws_environment(tmp_path: Path, seaweedfs: S3Server,  # noqa: F811
                                                       s3_bucket: str) -> None:  # noqa: F811
    config = s3_config(seaweedfs, s3_bucket, access_key="")
    env = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    server = start_cargobay(tmp_path, config=config, env=env)
    try:
        digest = "sha256:" + hashlib.sha256(b"chain").hexdigest()
        r = httpx.post(f"{server.url}/v2/aws-chain/blobs/uploads/", params={"digest": digest}, content=b"chain")
        assert r.status_code == 201, r.text
        assert httpx.get(f"{server.url}/healthz").json() == {"storage": "ok"}
    finally:
        server.stop()

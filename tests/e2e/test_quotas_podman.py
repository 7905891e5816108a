"""Quotas with podman: an image pushed into two repositories one quota covers counts once, and the
push that would take the quota past its limit fails in podman with the registry's message (the
quota, its usage, the size asked) and leaves no tag behind; `registry usage` agrees."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.images import Entry, Image, build_image, make_layer, write_oci_layout
from tests.support.servers import REPO_ROOT, RunningServer, serving, start_cargobay

from .clients import Engine

LIMIT = 100_000  # one image of ~60 kB fits, two distinct ones do not
Podmans = Callable[[str], Engine]


def _config(root: Path) -> dict[str, object]:
    return {"storage": {"filesystem": {"root": str(root)}},
            "policy": {"quotas": [{"repositories": "quota/*", "limit": LIMIT}]}}


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("quota-podman")
    yield from serving(start_cargobay(work, config=_config(work / "data")))


def _random_image(name: str) -> Image:
    # Random bytes do not compress: the layer is as large in the registry as here.
    layer = make_layer([Entry("data", "dir", mode=0o755), (f"data/{name}.bin", os.urandom(60_000))])
    return build_image([layer])


def _load(engine: Engine, tmp_path: Path, name: str) -> Image:
    image = _random_image(name)
    engine("pull", f"oci:{write_oci_layout(tmp_path / name, image, 'v1')}:v1")
    return image


def test_podman_push_refused_at_the_quota_and_shared_layers_counted_once(
        quota_server: RunningServer, make_podman: Podmans, tmp_path: Path) -> None:
    host = quota_server.hostport
    pusher = make_podman("pusher")
    first = _load(pusher, tmp_path, "first")
    pusher("push", "--tls-verify=false", first.config.digest[7:], f"docker://{host}/quota/app:v1")
    # The same image into another repository of the quota: its blobs are counted already.
    pusher("push", "--tls-verify=false", first.config.digest[7:], f"docker://{host}/quota/other:v1")

    second = _load(pusher, tmp_path, "second")
    refused = pusher("push", "--tls-verify=false", second.config.digest[7:], f"docker://{host}/quota/app:v2",
                     check=False)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() and "quota quota/* exceeded" in refused.stderr, refused.stderr
    assert "of 97.7 KiB used" in refused.stderr
    with httpx.Client(base_url=quota_server.url, timeout=30) as client:
        assert client.get("/v2/quota/app/manifests/v2").status_code == 404
        assert client.get("/v2/quota/other/manifests/v1").status_code == 200

    config_path = tmp_path / "usage.yaml"
    assert quota_server.root is not None  # start_cargobay's default root, the one _config names
    config_path.write_text(yaml.safe_dump(_config(quota_server.root)))
    out = subprocess.run([sys.executable, "-m", "registry", "usage", "--config", str(config_path)],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    [row] = [line.split() for line in out.stdout.splitlines() if line.startswith("quota/*")]
    used_kib = float(row[1])
    assert row[2] == "KiB" and 58 < used_kib < 70  # one image's layer and config, not two

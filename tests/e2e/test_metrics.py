"""Prometheus metrics of a real `registry serve` with two workers, scraped and parsed as Prometheus
would (prometheus_client's parser):

- after skopeo pushed and pulled, the request counters are exactly what the access log says the
  workers answered (summed over both: the metrics listener of its own, in the parent process,
  answers from every worker's files), the blob bytes sent cover what was pulled, storage calls are
  counted, and no label names a repository or a digest;
- who may read them: Basic credentials (auth.basic off) or a token of a user with `metrics: true`,
  nobody else; failed logins are counted;
- a `registry gc` run from the command line shows as the job's last run, read from storage;
- over S3 with repository labels, on the main listener, anonymous: the s3 driver label, repository
  labels, gc and retention runs and quota usage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.registry.helpers import assert_error, sha256
from tests.registry.test_auth_api import auth_config, get_token_with
from tests.support.images import push_image, simple_image, write_oci_layout
from tests.support.metrics import Scrape, scrape
from tests.support.s3replicas import s3_config, s3_env, wait_for
from tests.support.s3servers import S3Server
from tests.support.servers import REPO_ROOT, RunningServer, free_port, start_cargobay

from .clients import Skopeo
from .conftest_s3 import s3_bucket, seaweedfs  # noqa: F401 - fixtures

PASSWORDS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2", "prom": "prom-Secret-5"}
RULES = """\
rules:
  - users: [alice]
    repositories: ["mt/*"]
    actions: [pull, push]
  - users: [bob]
    repositories: ["mt/*"]
    actions: [pull]
  - users: [prom]
    metrics: true
"""
MANIFESTS = "/v2/{name}/manifests/{reference}"
BLOBS = "/v2/{name}/blobs/{digest}"
PROM = ("prom", PASSWORDS["prom"])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str, Path]]:
    """Two workers, auth on (Basic off on the API), JSON access log, metrics on a listener of their own."""
    workdir = tmp_path_factory.mktemp("metrics")
    config = auth_config(workdir, PASSWORDS, RULES)
    listen = f"127.0.0.1:{free_port()}"
    config.update(http={"workers": 2}, log={"level": "info", "format": "json", "access": "true"},
                  metrics={"listen": listen})
    config_path = workdir / "gc.yaml"  # what `registry gc` reads
    config_path.write_text(yaml.safe_dump(config))
    server = start_cargobay(workdir, config=config)
    try:
        yield server, f"http://{listen}/metrics", config_path
    finally:
        server.stop()


def access_counts(server: RunningServer) -> Counter[tuple[str, str, str]]:
    """(route, method, status) of every access-log line, as the metrics label them."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in server.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") == "cargobay.access":
            counts[(entry["route"] or "unmatched", entry["method"], str(entry["status"]))] += 1
    return counts


def undocumented(metrics: Scrape) -> list[str]:
    """The registry's metrics served that docs/operations.md does not name."""
    docs = (REPO_ROOT / "docs" / "operations.md").read_text()
    return sorted(f for f in metrics.families if f.startswith("cargobay_") and f not in docs)


def request_counts(metrics: Scrape) -> Counter[tuple[str, str, str]]:
    return Counter({(s.labels["route"], s.labels["method"], s.labels["status"]): int(s.value)
                    for s in metrics.matching("cargobay_http_requests_total") if s.value})


def test_counters_are_what_the_workers_answered(registry: tuple[RunningServer, str, Path], skopeo: Skopeo,
                                                tmp_path: Path) -> None:
    server, url, _ = registry
    image = simple_image("metrics-e2e", layer_count=3, layer_size=50_000)
    layout = write_oci_layout(tmp_path / "in", image, "v1")
    ref = f"docker://{server.hostport}/mt/app:v1"
    creds = f"alice:{PASSWORDS['alice']}"
    skopeo.copy(f"oci:{layout}:v1", ref, "--preserve-digests", "--dest-creds", creds)
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:v1", "--preserve-digests", "--src-creds", creds)
    skopeo.copy(ref, f"oci:{tmp_path / 'again'}:v1", "--preserve-digests", "--src-creds", creds)

    # The metrics listener answers from every worker's files: what it says is what the access log
    # (one line per request, from both workers) says, once the last request is done.
    def settled() -> Scrape | None:
        metrics = scrape(url, PROM)
        return metrics if request_counts(metrics) == access_counts(server) else None

    metrics = wait_for(settled, timeout=15, what="the request counters to match the access log")
    assert metrics.total("cargobay_http_requests_total", route=MANIFESTS, method="PUT", status="201") == 1
    assert metrics.total("cargobay_http_requests_total", route=MANIFESTS, method="GET", status="200") >= 2
    pulled = sum(blob.size for blob in image.blobs())
    assert metrics.total("cargobay_http_sent_bytes_total", route=BLOBS, method="GET") >= 2 * pulled
    assert metrics.total("cargobay_http_received_bytes_total", method="PUT") + metrics.total(
        "cargobay_http_received_bytes_total", method="PATCH") + metrics.total(
        "cargobay_http_received_bytes_total", method="POST") >= pulled
    assert metrics.total("cargobay_http_request_duration_seconds_count", route=MANIFESTS, method="PUT") == 1
    assert metrics.total("cargobay_http_uploads_in_progress") == 0
    for operation in ("put", "get", "writer.close", "writer.commit"):
        assert metrics.total("cargobay_storage_operation_duration_seconds_count", driver="filesystem",
                             operation=operation) >= 1, operation
    assert "cargobay_notifications_queue_depth" in metrics.families  # others' metrics are served too
    assert not undocumented(metrics)

    # No label names a repository or a digest: only templates, methods, statuses, operations.
    values = metrics.label_values()
    assert not [v for v in values if "mt/" in v or "sha256:" in v], values
    assert {MANIFESTS, BLOBS} <= values


def test_only_users_with_the_metrics_right_read_them(registry: tuple[RunningServer, str, Path]) -> None:
    server, url, _ = registry
    before = scrape(url, PROM).total("cargobay_auth_failed_logins_total")

    nobody = httpx.get(url, timeout=30)
    assert_error(nobody, 401, "UNAUTHORIZED")
    assert nobody.headers["www-authenticate"].startswith("Basic realm=")
    assert_error(httpx.get(url, auth=("prom", "wrong"), timeout=30), 401, "UNAUTHORIZED")
    assert_error(httpx.get(url, auth=("bob", PASSWORDS["bob"]), timeout=30), 403, "DENIED")
    bob = get_token_with(server.url, ("bob", PASSWORDS["bob"]), "repository:mt/app:pull")
    assert_error(httpx.get(url, headers={"Authorization": f"Bearer {bob}"}, timeout=30), 403, "DENIED")
    token = get_token_with(server.url, PROM, "registry:metrics:*")
    scrape(url, headers={"Authorization": f"Bearer {token}"})
    assert httpx.get(f"{server.url}/metrics", auth=PROM, timeout=30).status_code == 404  # on its own listener

    assert scrape(url, PROM).total("cargobay_auth_failed_logins_total") == before + 1


def test_a_gc_run_from_the_command_line_shows(registry: tuple[RunningServer, str, Path]) -> None:
    server, url, config_path = registry
    orphan = os.urandom(3000)
    token = get_token_with(server.url, ("alice", PASSWORDS["alice"]), "repository:mt/orphan:pull,push")
    r = httpx.post(f"{server.url}/v2/mt/orphan/blobs/uploads/", params={"digest": sha256(orphan)}, content=orphan,
                   headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 201, r.text
    old = time.time() - 7200  # older than any grace: the orphan may go
    assert server.root is not None
    for path in (server.root / "v1").rglob("*"):
        os.utime(path, (old, old))
    started = time.time()
    gc = subprocess.run([sys.executable, "-m", "registry", "gc", "--config", str(config_path)],
                        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert gc.returncode == 0, gc.stderr

    metrics = scrape(url, PROM)
    assert metrics.total("cargobay_job_last_run_timestamp_seconds", task="gc") >= started - 1
    assert metrics.total("cargobay_gc_last_run_removed_blobs") == 1
    assert metrics.total("cargobay_gc_last_run_freed_bytes") == len(orphan)


# -- over S3 -----------------------------------------------------------------------------------------
S3_EXTRA: dict[str, Any] = {
    "http": {"workers": 2},
    "metrics": {"anonymous": True, "repository_labels": True},
    "gc": {"interval": "1s"},
    "retention": {"interval": "1s", "rules": [{"repositories": ["m3/ret"], "keep_last": 1}]},
    "policy": {"quotas": [{"repositories": "m3/*", "limit": "1GiB"}]},
}


def test_over_s3_with_repository_labels(tmp_path: Path, seaweedfs: S3Server, s3_bucket: str) -> None:  # noqa: F811
    config = {**s3_config(seaweedfs, s3_bucket), **S3_EXTRA}
    image, old, new = simple_image("metrics-s3"), simple_image("metrics-s3-old"), simple_image("metrics-s3-new")
    server = start_cargobay(tmp_path, config=config, env=s3_env(seaweedfs))
    try:
        with httpx.Client(timeout=30) as http:
            push_image(http, server.url, "m3/app", image, "v1")
            push_image(http, server.url, "m3/ret", old, "a")
            push_image(http, server.url, "m3/ret", new, "b")  # retention keeps the last one
        url = f"{server.url}/metrics"

        def settled() -> Scrape | None:
            metrics = scrape(url)  # anonymous, on the main listener
            ready = (metrics.total("cargobay_retention_removed_total", kind="tag") >= 1
                     and metrics.total("cargobay_gc_runs_total") >= 1
                     and metrics.total("cargobay_job_last_run_timestamp_seconds", task="retention") > 0
                     and metrics.total("cargobay_quota_used_bytes", quota="m3/*") > 0)
            return metrics if ready else None

        metrics = wait_for(settled, timeout=40, what="gc, retention and quota figures")
    finally:
        server.stop()
    assert metrics.total("cargobay_http_requests_total", route=MANIFESTS, method="PUT", repository="m3/app") == 1
    assert metrics.total("cargobay_http_requests_total", route=MANIFESTS, method="PUT", repository="m3/ret") == 2
    assert metrics.total("cargobay_storage_operation_duration_seconds_count", driver="s3", operation="put") >= 1
    assert not list(metrics.matching("cargobay_storage_operation_duration_seconds_count", driver="filesystem"))
    assert metrics.total("cargobay_quota_limit_bytes", quota="m3/*") == 1024 ** 3
    assert metrics.total("cargobay_quota_used_bytes", quota="m3/*") >= sum(b.size for b in image.blobs())
    assert not undocumented(metrics)

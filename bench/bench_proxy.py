#!/usr/bin/env python3
"""The pull-through cache against pulling straight from the upstream and against CNCF
Distribution's proxy mode (`proxy: remoteurl:`), over the same upstream, on loopback.

    python bench/bench_proxy.py [--quick] [--rounds N] [--size-mb 256] [--layers 8] [--jobs 4]
                                [--workers 1] [--seconds 5] [--connections 8] [--via ns|prefix] [--tmp DIR]

The upstream is Debian's `docker-registry` (Distribution 2.8) holding one image of `--layers`
incompressible tar layers, `--size-mb` in all, pushed with the tests' image helpers. A pull is what a
node does: GET the manifest by tag, then GET every blob (`--jobs` at a time), each streamed as the
puller streams it (what has arrived, up to 1 MiB at a time; here with urllib3) and checked against
its sha256 and size. Each round runs, in alternating order:

  cold   a pull through a Cargobay cache with a fresh root (a new server, started untimed)
         vs the same pull straight from the upstream                            target >= 0.9x
  coldp  that cold pull vs one through a fresh Distribution proxy (the peer)   target >= 1.0x
  warm   a pull through a warmed Cargobay cache vs through a warmed Distribution
         proxy (which still asks the upstream to resolve the tag)               target >= 1.0x
  head   manifest HEAD by tag for `--seconds` over `--connections` keep-alive connections, within
         Cargobay's tag_ttl, vs Distribution's proxy (which asks the upstream every time)
                                                                                target >= 2.0x

Cargobay is reached the way containerd and puller reach it (`?ns=<host>`, the default) or the way
podman reaches it (`--via prefix`: /v2/<host>/<name>/...). The medians, their ratios and the server
CPU spent per MiB or per request (every server process on the path: for a pull through a cache,
the cache and the upstream) are printed. Exit status 0 when the bench ran, whatever the ratios;
1 with one `bench: FAILED: ...` line when a server misbehaved or did not start.
"""

from __future__ import annotations

import argparse
import functools
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
from typing import TypeVar
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import httpx  # noqa: E402
import urllib3  # noqa: E402
from bench_registry import ACCEPT, BenchError, asyncio_rate, cpu_of, process_tree, versions  # noqa: E402

from tests.support import images as im  # noqa: E402
from tests.support import servers as support_servers  # noqa: E402
from tests.support.servers import RunningServer  # noqa: E402

MiB = 1024 * 1024
REPO = "bench/app"
TAG = "v1"
UPSTREAM_HOST = "upstream.bench"  # what clients name: the cached repository is upstream.bench/bench/app
T = TypeVar("T")


# -- the image -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What a pull must get: the manifest's digest and every blob's digest and size."""
    manifest_digest: str
    blobs: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        return sum(size for _, size in self.blobs)


@dataclass(frozen=True)
class _Descriptor:
    """A layer without its bytes: what build_image reads of a layer (descriptor and diff_id)."""
    media_type: str
    digest: str
    size: int
    diff_id: str | None

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def push_test_image(url: str, size: int, layers: int) -> Target:
    """Build `layers` uncompressed tar layers of random bytes (the cache must not get away with
    compressible data), push them with the manifest as bench/app:v1, and keep only the digests.
    Each layer is dropped once pushed, so memory holds one layer at a time."""
    per_layer = size // layers
    descriptors: list[_Descriptor] = []
    with httpx.Client(timeout=300, trust_env=False) as client:
        for i in range(layers):
            layer = im.make_layer([im.Entry(f"l{i}", "dir", mode=0o755), (f"l{i}/data.bin", os.urandom(per_layer))],
                                  compression="")
            im.push_blob(client, url, REPO, layer)
            descriptors.append(_Descriptor(layer.media_type, layer.digest, layer.size, layer.diff_id))
            del layer
        image = im.build_image(descriptors)  # type: ignore[arg-type]
        im.push_blob(client, url, REPO, image.config)
        im.push_manifest(client, url, REPO, TAG, image.manifest, image.media_type)
    return Target(image.digest, ((image.config.digest, image.config.size), *((d.digest, d.size) for d in descriptors)))


# -- a pull ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One way to pull the image: a server and how the image is named on it."""
    label: str
    url: str
    repo: str
    query: dict[str, str] = field(default_factory=dict)

    def path(self, kind: str, ref: str) -> str:
        return f"/v2/{self.repo}/{kind}/{ref}"


def pull(endpoint: Endpoint, target: Target, jobs: int) -> int:
    """Manifest GET by tag, then every blob GET, `jobs` at a time, each verified; bytes received."""
    limits = httpx.Limits(max_connections=jobs, max_keepalive_connections=jobs)
    with httpx.Client(base_url=endpoint.url, timeout=300, trust_env=False, limits=limits) as client:
        r = client.get(endpoint.path("manifests", TAG), params=endpoint.query, headers={"Accept": ACCEPT})
        _expect(r, 200, f"{endpoint.label}: GET manifest {TAG}")
        digest = im.sha256(r.content)
        if digest != target.manifest_digest:
            raise BenchError(f"{endpoint.label}: the manifest served has digest {digest}, upstream's is "
                             f"{target.manifest_digest}")
        manifest = json.loads(r.content)
        wanted = [(d["digest"], d["size"]) for d in [manifest["config"], *manifest["layers"]]]
        if tuple(wanted) != target.blobs:
            raise BenchError(f"{endpoint.label}: the manifest names other blobs than the upstream's")

        # Blobs as the puller fetches them (reads of what has arrived, up to 1 MiB; urllib3 here, whose
        # cost is close to distclient's own HTTP/1.1), so the client's own cost on these shared cores is a node's.
        pool_manager = urllib3.PoolManager(maxsize=jobs, retries=False, timeout=300)
        query = "?" + urlencode(endpoint.query) if endpoint.query else ""

        def blob(item: tuple[str, int]) -> int:
            digest, size = item
            hasher = hashlib.sha256()
            received = 0
            resp = pool_manager.request("GET", endpoint.url + endpoint.path("blobs", digest) + query,
                                        preload_content=False, decode_content=False, redirect=False)
            try:
                if resp.status != 200:
                    raise BenchError(f"{endpoint.label}: GET blob {digest}: expected HTTP 200, got {resp.status} "
                                     f"{resp.read(300)!r}")
                while chunk := resp.read1(MiB):
                    hasher.update(chunk)
                    received += len(chunk)
            finally:
                resp.release_conn()
            if received != size or f"sha256:{hasher.hexdigest()}" != digest:
                raise BenchError(f"{endpoint.label}: blob {digest}: received {received} bytes of {size} "
                                 f"with digest sha256:{hasher.hexdigest()}")
            return received

        with ThreadPoolExecutor(jobs) as pool:
            return len(r.content) + sum(pool.map(blob, wanted))


def _expect(r: httpx.Response, status: int, what: str) -> None:
    if r.status_code != status:
        raise BenchError(f"{what}: expected HTTP {status}, got {r.status_code} {r.text[:300].strip()}")


def head_once(endpoint: Endpoint) -> None:
    """One HEAD by tag, as the timed row sends them (checks that the path and query are right)."""
    r = httpx.head(endpoint.url + endpoint.path("manifests", TAG), params=endpoint.query,
                   headers={"Accept": ACCEPT}, trust_env=False, timeout=30)
    _expect(r, 200, f"{endpoint.label}: HEAD manifest {TAG}")


def head_target(endpoint: Endpoint) -> str:
    query = "&".join(f"{k}={v}" for k, v in endpoint.query.items())
    return endpoint.path("manifests", TAG) + (f"?{query}" if query else "")


# -- servers ---------------------------------------------------------------------------------------

def started(label: str, start: Callable[[], RunningServer]) -> RunningServer:
    try:
        return start()
    except RuntimeError as exc:
        raise BenchError(f"{label} did not start: {str(exc).strip()[-600:]}") from None


def cargobay_config(root: Path, upstream: RunningServer) -> dict[str, object]:
    return {
        "storage": {"filesystem": {"root": str(root)}},
        "proxy": {"upstreams": [{"host": UPSTREAM_HOST, "url": upstream.url, "tag_ttl": "1h"}]},
    }


def start_cache(workdir: Path, upstream: RunningServer, workers: int) -> RunningServer:
    return started("Cargobay", lambda: support_servers.start_cargobay(
        workdir, config=cargobay_config(workdir / "data", upstream), extra_args=["--workers", str(workers)],
        inherit_settings=False, ready_timeout=60))


def cache_endpoint(label: str, server: RunningServer, via: str) -> Endpoint:
    if via == "prefix":
        return Endpoint(label, server.url, f"{UPSTREAM_HOST}/{REPO}")
    return Endpoint(label, server.url, REPO, {"ns": UPSTREAM_HOST})


def log_tail(server: RunningServer, lines: int = 8) -> str:
    tail = "\n".join(server.log().strip().splitlines()[-lines:])
    return f"\n--- {server.log_path.name} (last lines) ---\n{tail}" if tail else ""


# -- the bench -------------------------------------------------------------------------------------

@dataclass
class Row:
    key: str
    title: str
    unit: str
    ours: str
    peer: str
    target: float
    samples: dict[str, list[float]] = field(default_factory=dict)
    costs: dict[str, list[float]] = field(default_factory=dict)

    def add(self, label: str, value: float, cpu_per_unit: float) -> None:
        self.samples.setdefault(label, []).append(value)
        self.costs.setdefault(label, []).append(cpu_per_unit)


def guarded(label: str, servers: list[RunningServer], work: Callable[[], T]) -> T:
    """`work()`, with what goes wrong turned into a BenchError naming the path and the servers' logs."""
    try:
        return work()
    except (OSError, httpx.HTTPError) as exc:
        dead = [s for s in servers if s.process.poll() is not None]
        hint = "".join(log_tail(s) for s in (dead or servers))
        raise BenchError(f"{label}: {type(exc).__name__}: {exc}{hint}") from None
    except BenchError as exc:
        raise BenchError(f"{exc}{''.join(log_tail(s) for s in servers)}") from None


def measure(row: Row, label: str, servers: list[RunningServer], work: Callable[[], float],
            amount: Callable[[float, float], float]) -> None:
    """Run `work` (it returns the figure) and record it with the CPU every server process on the
    path spent per unit of work (`amount(figure, seconds)` units: MiB or requests)."""
    pids = [pid for s in servers for pid in process_tree(s.process.pid)]
    cpu0, t0 = cpu_of(pids), time.perf_counter()
    value = guarded(label, servers, work)
    elapsed = time.perf_counter() - t0
    row.add(label, value, (cpu_of(pids) - cpu0) / max(amount(value, elapsed), 1e-9))


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def report(rows: list[Row], rounds: int) -> list[str]:
    out = [f"{'row (median of ' + str(rounds) + ')':<44}{'Cargobay':>16}{'peer':>16}{'ratio':>8}{'target':>8}",
           "-" * 92]
    for row in rows:
        ours, peer = statistics.median(row.samples[row.ours]), statistics.median(row.samples[row.peer])
        ratio = ours / peer
        mark = "" if ratio >= row.target else "  below target"
        out.append(f"{row.title:<44}{fmt(ours) + ' ' + row.unit:>16}{fmt(peer) + ' ' + row.unit:>16}"
                   f"{ratio:>7.2f}x{row.target:>7.1f}x{mark}")
    out += ["", "server CPU on the path (median):"]
    for row in rows:
        unit = "ms/MiB" if row.unit == "MiB/s" else "us/req"
        scale = 1e3 if row.unit == "MiB/s" else 1e6
        out.append(f"  {row.key:<6} {row.ours}: {scale * statistics.median(row.costs[row.ours]):.2f} {unit}, "
                   f"{row.peer}: {scale * statistics.median(row.costs[row.peer]):.2f} {unit}")
    out += ["", "per-round figures:"]
    for row in rows:
        for label, values in row.samples.items():
            out.append(f"  {row.key:<6} {label:<22} " + " ".join(fmt(v) for v in values))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="the pull-through cache vs the upstream and Distribution's proxy mode")
    p.add_argument("--quick", action="store_true", help="64 MiB image, 1 round, 2 s HEAD runs")
    p.add_argument("--rounds", type=int, help="rounds (default 5, quick 1); the median is reported")
    p.add_argument("--size-mb", type=int, help="image size in MiB (default 256, quick 64)")
    p.add_argument("--layers", type=int, default=8, help="layers of the image (default 8)")
    p.add_argument("--jobs", type=int, default=4, help="blobs a pull fetches at a time (default 4, like puller)")
    p.add_argument("--workers", type=int, default=1, help="Cargobay worker processes (default 1)")
    p.add_argument("--seconds", type=float, help="length of each HEAD run (default 5, quick 2)")
    p.add_argument("--connections", type=int, default=8, help="keep-alive connections of the HEAD row (default 8)")
    p.add_argument("--via", choices=("ns", "prefix"), default="ns",
                   help="how Cargobay's cached name is reached: ?ns= (containerd, puller) or a host prefix (podman)")
    p.add_argument("--distribution", default="docker-registry", help="Distribution binary")
    p.add_argument("--tmp", type=Path, help="parent directory for the temp dir (default: system temp)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.size = (args.size_mb or (64 if args.quick else 256)) * MiB
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    if not 1 <= args.rounds <= 50 or args.layers < 1 or args.jobs < 1 or args.workers < 1 or args.connections < 1:
        p.error("need 1 <= --rounds <= 50 and --layers, --jobs, --workers, --connections >= 1")
    if args.size < args.layers * MiB:
        p.error("--size-mb must be at least one MiB per layer")
    return args


def run(args: argparse.Namespace) -> int:
    distribution = shutil.which(args.distribution)
    if not distribution:
        raise BenchError(f"{args.distribution} not found (apt-get install -y docker-registry)")
    if not (REPO_ROOT / "registry" / "proxy").is_dir():
        raise BenchError("this tree has no registry/proxy/: the pull-through cache is not there yet")
    for line in versions(None, distribution, REPO_ROOT)[:3]:
        print(line, flush=True)
    print(f"client: httpx {httpx.__version__}, {args.jobs} blob GETs at a time, sha256 checked; "
          f"HEAD/s: asyncio keep-alive client, {args.connections} connections", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="cargobay-bench-proxy-", dir=args.tmp))
    servers: list[RunningServer] = []
    try:
        upstream = started("upstream Distribution", lambda: support_servers.start_distribution(
            workdir / "upstream", binary=distribution, ready_timeout=60))
        servers.append(upstream)
        print(f"pushing a {args.size // MiB} MiB image of {args.layers} layers to the upstream "
              f"({upstream.hostport}) ...", flush=True)
        target = push_test_image(upstream.url, args.size, args.layers)
        total_mib = target.size / MiB

        dproxy = started("Distribution proxy", lambda: support_servers.start_distribution(
            workdir / "dproxy", extra_config={"proxy": {"remoteurl": upstream.url}}, binary=distribution,
            ready_timeout=60))
        servers.append(dproxy)
        warm = start_cache(workdir / "warm", upstream, args.workers)
        servers.append(warm)
        direct = Endpoint("upstream direct", upstream.url, REPO)
        peer_proxy = Endpoint("Distribution proxy", dproxy.url, REPO)
        warm_cache = cache_endpoint("Cargobay warm", warm, args.via)
        print("warming both caches and checking every path once ...", flush=True)
        for endpoint, path in ((direct, [upstream]), (peer_proxy, [dproxy, upstream]), (warm_cache, [warm, upstream])):
            guarded(endpoint.label, path, functools.partial(pull, endpoint, target, args.jobs))
            guarded(endpoint.label, path, functools.partial(head_once, endpoint))

        cold = Row("cold", f"cold pull {total_mib:.0f} MiB, fresh cache", "MiB/s",
                   "Cargobay cold", "upstream direct", 0.9)
        warm_row = Row("warm", f"warm pull {total_mib:.0f} MiB", "MiB/s", "Cargobay warm", "Distribution proxy", 1.0)
        head = Row("head", f"manifest HEAD by tag, {args.connections} connections", "req/s",
                   "Cargobay warm", "Distribution proxy", 2.0)
        cold_peer = Row("coldp", f"cold pull {total_mib:.0f} MiB vs Distribution's", "MiB/s",
                        "Cargobay cold", "Distribution proxy cold", 1.0)
        rows = [cold, cold_peer, warm_row, head]

        def mib_per_s(endpoint: Endpoint) -> Callable[[], float]:
            def go() -> float:
                t0 = time.perf_counter()
                n = pull(endpoint, target, args.jobs)
                return n / MiB / (time.perf_counter() - t0)
            return go

        def head_rate(server: RunningServer, endpoint: Endpoint) -> Callable[[], float]:
            return lambda: asyncio_rate(server.host, server.port, head_target(endpoint), "HEAD", args.seconds,
                                        args.connections)

        def mib(value: float, elapsed: float) -> float:
            return value * elapsed

        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}: ", end="", flush=True)
            first = rnd % 2 == 0
            cache = start_cache(workdir / f"cold-{rnd}", upstream, args.workers)
            servers.append(cache)
            peer_dir = workdir / f"dproxy-cold-{rnd}"
            peer_cold = started("Distribution proxy", functools.partial(
                support_servers.start_distribution, peer_dir, extra_config={"proxy": {"remoteurl": upstream.url}},
                binary=distribution, ready_timeout=60))
            servers.append(peer_cold)
            try:
                fresh = cache_endpoint("Cargobay cold", cache, args.via)
                fresh_peer = Endpoint("Distribution proxy cold", peer_cold.url, REPO)
                order = [(fresh, [cache, upstream]), (direct, [upstream]), (fresh_peer, [peer_cold, upstream])]
                for endpoint, path in order if first else order[::-1]:
                    row = cold_peer if endpoint is fresh_peer else cold
                    measure(row, endpoint.label, path, mib_per_s(endpoint), mib)
                # The same cold pull through Cargobay is the figure both cold rows compare.
                cold_peer.samples.setdefault(fresh.label, []).append(cold.samples[fresh.label][-1])
                cold_peer.costs.setdefault(fresh.label, []).append(cold.costs[fresh.label][-1])
            finally:
                for server in (cache, peer_cold):
                    server.stop()
                    servers.remove(server)
                shutil.rmtree(workdir / f"cold-{rnd}", ignore_errors=True)
                shutil.rmtree(peer_dir, ignore_errors=True)
            print("cold ", end="", flush=True)
            order = [(warm_cache, [warm, upstream]), (peer_proxy, [dproxy, upstream])]
            for endpoint, path in order if first else order[::-1]:
                measure(warm_row, endpoint.label, path, mib_per_s(endpoint), mib)
            print("warm ", end="", flush=True)
            servers_of = {warm_cache.label: warm, peer_proxy.label: dproxy}
            for endpoint, path in order if first else order[::-1]:
                measure(head, endpoint.label, path, head_rate(servers_of[endpoint.label], endpoint),
                        lambda v, t: v * t)
            print("head", flush=True)

        print()
        for line in report(rows, args.rounds):
            print(line)
        print(f"load average {os.getloadavg()[0]:.2f} at end")
        return 0
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

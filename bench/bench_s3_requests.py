#!/usr/bin/env python3
"""What a user's operations cost in S3 requests: Cargobay vs CNCF Distribution (Debian's
`docker-registry`, with and without its in-memory blob descriptor cache), on one SeaweedFS.

    python bench/bench_s3_requests.py [--big-mib 64] [--chunk-mib 16] [--markdown] [--tmp DIR]

Each registry reaches S3 through a recording proxy of its own (tests/support/s3replicas.py
RecordingProxy), so every request is counted exactly, by method, for each operation:
a 1 KiB monolithic upload (POST, then PUT with the body), a skopeo push of a 4-layer image, a skopeo
pull of it, and the throughput rows of bench_s3.py (an upload in one streamed PATCH, in PATCHes of
`--chunk-mib`, POST + PUT with the body, a download). Request counts do not depend on the machine's
load: for the rates, run bench_s3.py. Exit status 0 when it ran, 1 with one `bench: FAILED:` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_registry as br
import bench_s3

from tests.support.images import Entry, Image, build_image, make_layer, write_oci_layout
from tests.support.s3replicas import RecordingProxy
from tests.support.s3servers import S3Server
from tests.support.tools import find_tool

MiB = br.MiB
KiB = 1024
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")


@dataclass
class Contender:
    label: str
    server: br.Server
    proxy: RecordingProxy
    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def measure(self, operation: str, action: Callable[[], object]) -> None:
        self.proxy.clear()
        action()
        self.counts[operation] = Counter(seen.method for seen in self.proxy.seen)


def small_image(seed: int) -> Image:
    """Four layers as a small image has them (1 KiB, 100 KiB, 2 MiB, 8 MiB of random bytes)."""
    rng = random.Random(seed)
    layers = [make_layer([Entry("data", "dir", mode=0o755), (f"data/{i}.bin", rng.randbytes(size))])
              for i, size in enumerate((KiB, 100 * KiB, 2 * MiB, 8 * MiB))]
    return build_image(layers)


def skopeo(binary: str, *args: str) -> None:
    proc = subprocess.run([binary, "copy", "--quiet", *args], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise br.BenchError(f"skopeo copy {' '.join(args[-2:])} failed: {proc.stderr.strip()[-500:]}")


Operation = tuple[str, Callable[[br.Server, str], object]]


def operations(args: argparse.Namespace, workdir: Path, skopeo_bin: str) -> list[Operation]:
    tiny = br.make_blob(workdir / "tiny.bin", KiB)
    big = br.make_blob(workdir / "big.bin", args.big_mib * MiB)
    layout = write_oci_layout(workdir / "layout", small_image(7), "v1")

    def push(server: br.Server, who: str) -> None:
        skopeo(skopeo_bin, "--dest-tls-verify=false", f"oci:{layout}:v1",
               f"docker://{server.host}:{server.port}/bench/small:v1")

    def pull(server: br.Server, who: str) -> None:
        target = workdir / f"pulled-{who}"
        shutil.rmtree(target, ignore_errors=True)
        skopeo(skopeo_bin, "--src-tls-verify=false", f"docker://{server.host}:{server.port}/bench/small:v1",
               f"dir:{target}")

    return [
        ("1 KiB monolithic upload (POST, PUT with body)", lambda s, w: br.upload_monolithic(s, "bench/tiny", tiny)),
        ("skopeo push, 4 layers (1 KiB-8 MiB)", push),
        ("skopeo pull of it", pull),
        (f"upload {args.big_mib} MiB, one streamed PATCH", lambda s, w: br.upload_streamed(s, "bench/streamed", big)),
        (f"upload {args.big_mib} MiB, PATCHes of {args.chunk_mib} MiB",
         lambda s, w: br.upload_chunked(s, "bench/chunked", big, args.chunk_mib * MiB)),
        (f"upload {args.big_mib} MiB, POST + PUT with body", lambda s, w: br.upload_monolithic(s, "bench/mono", big)),
        (f"download {args.big_mib} MiB", lambda s, w: br.download(s, "bench/mono", big, verify=True)),
    ]


def start_all(weed: S3Server, workdir: Path, distribution_bin: str) -> list[Contender]:
    contenders: list[Contender] = []
    client = weed.client()
    for label in ("Cargobay", "Distribution", "Distribution+cache"):
        slug = label.lower().replace("+", "-")
        bucket = f"{slug}-requests"
        client.create_bucket(Bucket=bucket)
        proxy = RecordingProxy(weed.endpoint_url)
        routed = S3Server(weed.kind, proxy.url(), weed.access_key, weed.secret_key, weed.process, weed.log_path)
        (workdir / slug).mkdir()
        if label == "Cargobay":
            # Its defaults, `http.workers` included (one per CPU): a step may reach any worker.
            server = bench_s3.start_cargobay(routed, bucket, workdir / slug, 0, {})
        else:
            server = bench_s3.start_distribution(distribution_bin, routed, bucket, workdir / slug,
                                                 cache=label.endswith("cache"))
        contenders.append(Contender(label, server, proxy))
    return contenders


def table(contenders: list[Contender], names: list[str], markdown: bool) -> list[str]:
    def cell(counts: Counter[str]) -> str:
        detail = " ".join(f"{m} {counts[m]}" for m in METHODS if counts[m])
        return f"{sum(counts.values())} ({detail})" if detail else "0"

    lines = []
    if markdown:
        lines.append("| operation | " + " | ".join(c.label for c in contenders) + " |")
        lines.append("|---|" + "---|" * len(contenders))
        for name in names:
            lines.append(f"| {name} | " + " | ".join(cell(c.counts[name]) for c in contenders) + " |")
        return lines
    lines.append(f"{'S3 requests':48}" + "".join(f" {c.label:>34}" for c in contenders))
    for name in names:
        lines.append(f"{name:48}" + "".join(f" {cell(c.counts[name]):>34}" for c in contenders))
    return lines


def run(args: argparse.Namespace) -> int:
    distribution_bin = shutil.which("docker-registry")
    skopeo_bin = find_tool("skopeo")
    if not distribution_bin or not skopeo_bin:
        raise br.BenchError("docker-registry (CNCF Distribution) and skopeo are needed")
    workdir = Path(tempfile.mkdtemp(prefix="cargobay-bench-s3req-", dir=args.tmp))
    weed = bench_s3.start_weed(workdir)
    contenders: list[Contender] = []
    try:
        contenders = start_all(weed, workdir, distribution_bin)
        ops = operations(args, workdir, skopeo_bin)
        for name, action in ops:
            for contender in contenders:
                contender.measure(name, lambda a=action, c=contender: a(c.server, c.label))
                if not contender.server.alive():
                    raise br.BenchError(f"{contender.label} died during {name!r}: {contender.server.log_path}")
        print("S3 requests per operation (SeaweedFS behind a recording proxy; Cargobay defaults, "
              f"part_size 16 MiB, a worker per CPU ({len(os.sched_getaffinity(0))} here); Distribution 2.8 s3 driver, "
              "chunksize 10 MiB):\n")
        print("\n".join(table(contenders, [name for name, _ in ops], args.markdown)))
        if args.json:
            print(json.dumps({c.label: {k: dict(v) for k, v in c.counts.items()} for c in contenders}))
        return 0
    finally:
        for contender in contenders:
            contender.server.stop()
            contender.proxy.close()
        weed.stop()
        if args.tmp is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big-mib", type=int, default=64)
    p.add_argument("--chunk-mib", type=int, default=16)
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", action="store_true", help="also print the counts as one JSON line")
    p.add_argument("--tmp", type=Path, help="work directory (default: a new temp dir, removed at the end)")
    args = p.parse_args(argv)
    try:
        return run(args)
    except br.BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: time to a root filesystem from a local registry, alternating round by round:

- `pull`: `puller pull REF DIR` (one process, download and unpack pipelined);
- `fetch+unpack`: `puller fetch REF` then `puller unpack REF DIR` (two processes, one after the other);
- `skopeo+umoci`: `skopeo copy docker://… oci:…` then `umoci unpack`.

Two images (rows): `small`, redis-like (about 8 MB compressed in 4 layers: a base of ~2,000 small
files, a few packages, a ~2 MB binary, an entrypoint script), and `large` (`--size-mb` of mostly
incompressible files in `--layers` layers). Prints each round, the medians and the ratios, and the
CPU time (user + system) of the clients, which moves less than wall-clock time on a busy machine.
Then shows that fetching an image sharing its base layers with a stored one downloads only what is
new. The puller runs from bytecode as installed code does (see PULLER_ENV).

    python bench/bench_puller.py [--rounds 5] [--image small|large|both] [--mode all|pull|fetch-unpack]
                                 [--size-mb 380] [--layers 8] [--registry distribution|cargobay] [--dir DIR]
                                 [--baseline DIR] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from tests.support import images as im  # noqa: E402
from tests.support.images import push_image  # noqa: E402
from tests.support.servers import start_cargobay, start_distribution  # noqa: E402

WORDS = ("alpha", "beta", "gamma", "delta", "cargo", "bay", "layer", "usr", "lib", "share", "doc", "\n")


def gzip_layer(entries: list[im.Entry | tuple[str, bytes]], level: int = 6) -> im.Blob:
    tar = im.make_tar(entries)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="", compresslevel=level) as gz:
        gz.write(tar)
    return im.Blob.of(im.LAYER_MEDIA_TYPES[("oci", "gzip")], out.getvalue(), diff_id=im.sha256(tar))


def text(rng: random.Random, size: int) -> bytes:
    """About `size` bytes that compress roughly like a distribution's text files (~3x)."""
    out = bytearray()
    while len(out) < size:
        out += rng.choice(WORDS).encode() + b" " + rng.randbytes(2).hex().encode() + b" "
    return bytes(out[:size])


def make_layer(seed: int, size: int) -> im.Blob:
    """A gzip layer of about `size` bytes: a mix of incompressible files and text, many files."""
    rng = random.Random(seed)
    entries: list[im.Entry | tuple[str, bytes]] = [im.Entry(f"l{seed}", "dir", mode=0o755)]
    written, n = 0, 0
    while written < size:
        if n % 4 == 3:
            words = [rng.choice(WORDS[:8]) for _ in range(20000)]
            data = " ".join(words).encode()
        else:
            data = rng.randbytes(rng.randint(64 * 1024, 4 * 1024 * 1024))
        entries.append((f"l{seed}/d{n % 16}/f{n}", data))
        written += len(data)
        n += 1
    dirs = sorted({f"l{seed}/d{i % 16}" for i in range(n)})
    entries[1:1] = [im.Entry(d, "dir", mode=0o755) for d in dirs]
    return gzip_layer(entries, level=1)


def small_image() -> im.Image:
    """Redis-like: a base of ~2,000 small files (dirs, symlinks, text and some binaries) in tar order,
    a layer of packages, the server binaries, an entrypoint script; about 8 MB compressed."""
    rng = random.Random(7)
    base: list[im.Entry | tuple[str, bytes]] = []
    for top in ("bin", "etc", "lib", "usr", "usr/bin", "usr/lib", "usr/share", "usr/share/doc", "var", "var/lib"):
        base.append(im.Entry(top, "dir", mode=0o755))
    dirs = [f"usr/share/doc/pkg{i}" for i in range(120)] + [f"usr/lib/mod{i}" for i in range(40)]
    for d, where in enumerate(dirs):  # in tar order: each directory, then what it holds
        base.append(im.Entry(where, "dir", mode=0o755))
        for i in range(d * 12, d * 12 + 12):
            if i % 25 == 0:
                base.append(im.Entry(f"{where}/link{i}", "symlink", target=f"f{i - 1}"))
            elif i % 10 == 0:
                base.append(im.Entry(f"{where}/f{i}.so", data=rng.randbytes(rng.randint(4_000, 24_000)), mode=0o755))
            else:
                base.append((f"{where}/f{i}", text(rng, rng.randint(500, 8_000))))
    packages: list[im.Entry | tuple[str, bytes]] = [im.Entry("usr/local", "dir", mode=0o755),
                                                     im.Entry("usr/local/lib", "dir", mode=0o755)]
    packages += [(f"usr/local/lib/p{i}.so", rng.randbytes(rng.randint(5_000, 40_000))) for i in range(40)]
    binary: list[im.Entry | tuple[str, bytes]] = [
        im.Entry("usr/local/bin", "dir", mode=0o755),
        im.Entry("usr/local/bin/redis-server", data=rng.randbytes(1_800_000), mode=0o755),
        im.Entry("usr/local/bin/redis-cli", data=rng.randbytes(400_000), mode=0o755),
        im.Entry("usr/local/bin/redis-check-aof", "symlink", target="redis-server"),
    ]
    script = [im.Entry("usr/local/bin/docker-entrypoint.sh", data=b"#!/bin/sh\nexec \"$@\"\n" * 40, mode=0o755)]
    return im.build_image([gzip_layer(base), gzip_layer(packages), gzip_layer(binary), gzip_layer(script)])


def run(argv: list[str]) -> None:
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr}")


#: The puller runs as installed code does, from bytecode: with a cache of its own (not __pycache__
#: directories in the checkout), also where PYTHONDONTWRITEBYTECODE is set (it would compile every
#: module on every run: ~100 ms of each process).
PULLER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def puller(*args: str, tree: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run the puller of `tree` (this checkout, or `--baseline`'s with a bytecode cache of its own)."""
    env = PULLER_ENV if tree == REPO_ROOT else {**PULLER_ENV,
                                                "PYTHONPYCACHEPREFIX": PULLER_ENV["PYTHONPYCACHEPREFIX"] + "-baseline"}
    result = subprocess.run([sys.executable, "-m", "puller", *args], capture_output=True, text=True, cwd=tree, env=env)
    if result.returncode != 0:
        raise SystemExit(f"puller {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_round(name: str, ref: str, out: Path, jobs: list[str],
              baseline: Path | None = None) -> tuple[float, float | None]:
    """Time to a rootfs in `out` with variant `name`: (total, the fetch step's share or None).
    "baseline" is `pull` with the puller of the `baseline` tree."""
    store = ["--store", str(out / "store"), "-q"]
    t0 = time.monotonic()
    t1: float | None = None
    if name in ("pull", "baseline"):
        tree = baseline if name == "baseline" and baseline else REPO_ROOT
        puller(*store, "pull", "--plain-http", *jobs, ref, str(out / "rootfs"), tree=tree)
    elif name == "fetch+unpack":
        puller(*store, "fetch", "--plain-http", *jobs, ref)
        t1 = time.monotonic()
        puller(*store, "unpack", "--plain-http", ref, str(out / "rootfs"))
    else:
        run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out / 'layout'}:v1"])
        t1 = time.monotonic()
        run(["umoci", "unpack", "--image", f"{out / 'layout'}:v1", str(out / "bundle")])
    t2 = time.monotonic()
    return t2 - t0, (t1 - t0 if t1 is not None else None)


def compare(label: str, ref: str, total: int, variants: list[str], rounds: int, work: Path,
            jobs: list[str], baseline: Path | None = None, keep: bool = False) -> dict[str, float]:
    """The row's rounds. Each round's outputs are deleted after it unless `keep` (then at the end
    of the row: on ext4 without a journal the files created in the next minutes pay for every
    file deleted, whichever tool creates them; bench/README.md)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    load_before = os.getloadavg()[0]
    for round_no in range(rounds):
        order = variants[round_no % len(variants):] + variants[:round_no % len(variants)]  # rotate who goes first
        for name in order:
            out = work / f"{label}-{name.replace('+', '-')}-{round_no}"
            out.mkdir()
            cpu_before = children_cpu()
            elapsed, fetch = one_round(name, ref, out, jobs, baseline)
            cpu[name].append(children_cpu() - cpu_before)
            times[name].append(elapsed)
            split = f" (fetch {fetch:.2f}s, unpack {elapsed - fetch:.2f}s)" if fetch is not None else ""
            print(f"  {label} round {round_no + 1}: {name:<13} {elapsed:6.2f}s{split}, CPU {cpu[name][-1]:.2f}s",
                  flush=True)
            if not keep:
                shutil.rmtree(out, ignore_errors=True)
    if keep:
        for out in work.glob(f"{label}-*"):
            shutil.rmtree(out, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{label}: load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
          "(the machine's other work shows in the figures)")
    base = medians.get("skopeo+umoci")
    for name, value in medians.items():
        ratio = f", {base / value:.2f}x skopeo+umoci" if base and name != "skopeo+umoci" else ""
        print(f"{label} median: {name:<13} {value:.2f}s ({total / value / 1e6:.0f} MB/s{ratio}); "
              f"client CPU (user+sys) {statistics.median(cpu[name]):.2f}s")
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image", choices=("small", "large", "both"), default="both")
    parser.add_argument("--mode", choices=("all", "pull", "fetch-unpack"), default="all",
                        help="which puller variants run against skopeo+umoci")
    parser.add_argument("--size-mb", type=int, default=380, help="large image: total layer bytes (uncompressed; "
                        "380: ~405 MB compressed)")
    parser.add_argument("--layers", type=int, default=8, help="large image: layers")
    parser.add_argument("--registry", choices=("distribution", "cargobay"), default="distribution")
    parser.add_argument("--jobs", type=int, default=None, help="puller --jobs")
    parser.add_argument("--dir", default=None, help="where the stores and root filesystems go (default: the "
                        "system's temp directory; /dev/shm takes the disk out of the figures)")
    parser.add_argument("--keep", action="store_true", help="delete each round's stores and trees when the row "
                        "ends, not after the round (see bench/README.md on ext4's recently deleted inodes)")
    parser.add_argument("--baseline", default=None, metavar="DIR", help="also run `pull` with the puller of DIR "
                        "(e.g. `git archive HEAD puller distclient ocispec | tar -x -C DIR`) as the variant "
                        "'baseline': before and after in the same rounds")
    args = parser.parse_args()
    for tool in ("skopeo", "umoci"):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    variants = {"all": ["pull", "fetch+unpack"], "pull": ["pull"], "fetch-unpack": ["fetch+unpack"]}[args.mode]
    variants.append("skopeo+umoci")
    baseline = Path(args.baseline).resolve() if args.baseline else None
    if baseline:
        variants.insert(0, "baseline")
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []

    work = Path(tempfile.mkdtemp(prefix="bench-puller-", dir=args.dir))
    PULLER_ENV["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    try:
        started = time.monotonic()
        rows: list[tuple[str, im.Image]] = []
        if args.image in ("small", "both"):
            rows.append(("small", small_image()))
        layers: list[im.Blob] = []
        if args.image in ("large", "both"):
            per_layer = args.size_mb * 1024 * 1024 // args.layers
            layers = [make_layer(i, per_layer) for i in range(args.layers)]
            rows.append(("large", im.build_image(layers)))
        for label, image in rows:
            print(f"{label} image: {len(image.layers)} layers, {sum(b.size for b in image.blobs()) / 1e6:.1f} MB "
                  "compressed")
        print(f"(built in {time.monotonic() - started:.0f}s)")

        server = (start_cargobay if args.registry == "cargobay" else start_distribution)(work / "registry")
        try:
            with httpx.Client(timeout=300) as client:
                for label, image in rows:
                    push_image(client, server.url, f"bench/{label}", image, "v1")
                extra = make_layer(1000, 8 * 1024 * 1024) if layers else None
                if extra is not None:
                    push_image(client, server.url, "bench/large", im.build_image([*layers[:-1], extra]), "v2")
            warm = work / "warm-up"  # compiles the puller's bytecode, as installing it would
            for tree in (REPO_ROOT, *([baseline] if baseline else [])):
                puller("--store", str(warm / "store"), "-q", "pull", "--plain-http",
                       f"{server.hostport}/bench/{rows[0][0]}:v1", str(warm / "rootfs"), tree=tree)
                shutil.rmtree(warm)
            for label, image in rows:
                total = sum(b.size for b in image.blobs())
                compare(label, f"{server.hostport}/bench/{label}:v1", total, variants, args.rounds, work, jobs,
                        baseline, args.keep)

            if extra is not None:
                store = work / "shared-store"
                puller("--store", str(store), "-q", "fetch", "--plain-http", f"{server.hostport}/bench/large:v1")
                events = [json.loads(line) for line in puller(
                    "--store", str(store), "--json", "fetch", "--plain-http",
                    f"{server.hostport}/bench/large:v2").stdout.splitlines()]
                done = events[-1]
                existing = sum(e["size"] for e in events if e["event"] == "blob-exists")
                print(f"second image sharing {len(layers) - 1} base layers: downloaded "
                      f"{done['downloaded'] / 1e6:.1f} MB (new layer {extra.size / 1e6:.1f} MB + config), "
                      f"reused {existing / 1e6:.0f} MB, {done['elapsed']:.2f}s")
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

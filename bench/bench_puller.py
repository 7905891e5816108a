"""Benchmark: fetch + unpack a ≥ 200 MB multi-layer image from a local registry with `puller`, and
with `skopeo copy docker://… oci:…` + `umoci unpack`, alternating; print both times and the ratio.
Then show that fetching an image sharing its base layers with a stored one downloads only what is new.

    python bench/bench_puller.py [--rounds 3] [--size-mb 240] [--layers 8] [--registry distribution|cargobay]
"""

from __future__ import annotations

import argparse
import io
import json
import random
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


def make_layer(seed: int, size: int) -> im.Blob:
    """A gzip layer of about `size` bytes: a mix of incompressible files and text, many files."""
    rng = random.Random(seed)
    entries: list[im.Entry | tuple[str, bytes]] = [im.Entry(f"l{seed}", "dir", mode=0o755)]
    written, n = 0, 0
    while written < size:
        if n % 4 == 3:
            vocab = ("alpha", "beta", "gamma", "delta", "cargo", "bay", "layer", "\n")
            words = [rng.choice(vocab) for _ in range(20000)]
            data = " ".join(words).encode()
        else:
            data = rng.randbytes(rng.randint(64 * 1024, 4 * 1024 * 1024))
        entries.append((f"l{seed}/d{n % 16}/f{n}", data))
        written += len(data)
        n += 1
    dirs = sorted({f"l{seed}/d{i % 16}" for i in range(n)})
    entries[1:1] = [im.Entry(d, "dir", mode=0o755) for d in dirs]
    tar = im.make_tar(entries)
    out = io.BytesIO()
    import gzip

    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="", compresslevel=1) as gz:
        gz.write(tar)
    return im.Blob.of(im.LAYER_MEDIA_TYPES[("oci", "gzip")], out.getvalue(), diff_id=im.sha256(tar))


def run(argv: list[str]) -> None:
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr}")


def puller(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "puller", *args], check=True, capture_output=True, text=True,
                          cwd=REPO_ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=240, help="total layer bytes (uncompressed)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--registry", choices=("distribution", "cargobay"), default="distribution")
    parser.add_argument("--jobs", type=int, default=None, help="puller --jobs")
    args = parser.parse_args()
    for tool in ("skopeo", "umoci"):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="bench-puller-"))
    try:
        started = time.monotonic()
        per_layer = args.size_mb * 1024 * 1024 // args.layers
        layers = [make_layer(i, per_layer) for i in range(args.layers)]
        image = im.build_image(layers)
        extra = make_layer(1000, 8 * 1024 * 1024)
        derived = im.build_image([*layers[:-1], extra])
        total = sum(b.size for b in image.blobs())
        print(f"image: {len(layers)} layers, {total / 1e6:.0f} MB compressed, "
              f"{args.size_mb * 1.048576:.0f} MB uncompressed (built in {time.monotonic() - started:.0f}s)")

        server = (start_cargobay if args.registry == "cargobay" else start_distribution)(work / "registry")
        try:
            with httpx.Client(timeout=300) as client:
                push_image(client, server.url, "bench/app", image, "v1")
                push_image(client, server.url, "bench/app", derived, "v2")
            ref = f"{server.hostport}/bench/app:v1"
            jobs = ["--jobs", str(args.jobs)] if args.jobs else []
            times: dict[str, list[float]] = {"puller": [], "skopeo+umoci": []}
            for round_no in range(args.rounds):
                for name in ("puller", "skopeo+umoci") if round_no % 2 == 0 else ("skopeo+umoci", "puller"):
                    out = work / f"{name.replace('+', '-')}-{round_no}"
                    out.mkdir()
                    t0 = time.monotonic()
                    if name == "puller":
                        puller("--store", str(out / "store"), "-q", "fetch", "--plain-http", *jobs, ref)
                        t1 = time.monotonic()
                        puller(
                            "--store", str(out / "store"), "-q", "unpack", "--plain-http", ref, str(out / "rootfs")
                        )
                    else:
                        run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                             f"oci:{out / 'layout'}:v1"])
                        t1 = time.monotonic()
                        run(["umoci", "unpack", "--image", f"{out / 'layout'}:v1", str(out / "bundle")])
                    t2 = time.monotonic()
                    times[name].append(t2 - t0)
                    print(
                        f"  round {round_no + 1}: {name:<13} {t2 - t0:6.2f}s "
                        f"(fetch {t1 - t0:.2f}s, unpack {t2 - t1:.2f}s)"
                    )
                    shutil.rmtree(out, ignore_errors=True)
            p, s = statistics.median(times["puller"]), statistics.median(times["skopeo+umoci"])
            print(f"fetch+unpack median: puller {p:.2f}s, skopeo+umoci {s:.2f}s, ratio {s / p:.2f}x "
                  f"({total / p / 1e6:.0f} MB/s vs {total / s / 1e6:.0f} MB/s)")

            store = work / "shared-store"
            puller("--store", str(store), "-q", "fetch", "--plain-http", ref)
            events = [json.loads(line) for line in puller("--store", str(store), "--json", "fetch", "--plain-http",
                                                         f"{server.hostport}/bench/app:v2").stdout.splitlines()]
            done = events[-1]
            existing = sum(e["size"] for e in events if e["event"] == "blob-exists")
            print(f"second image sharing {len(layers) - 1} base layers: downloaded {done['downloaded'] / 1e6:.1f} MB "
                  f"(new layer {extra.size / 1e6:.1f} MB + config), reused {existing / 1e6:.0f} MB, "
                  f"{done['elapsed']:.2f}s")
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The web console's repository page with many tags: time to first byte and to a loaded page.

    python bench/bench_ui.py [--tags 1000,10000] [--rounds 15] [--workers 1]

For each tag count N, a fresh Cargobay (`registry serve`, disk storage) gets N distinct manifests of
one two-layer image (each with an annotation of its own, so every tag names another manifest: a
page reads as many manifests as it shows rows), one tag each, pushed over a keep-alive connection,
plus a two-platform index under one more tag. Then, alternating the pages round by round:

- time to first byte and to the last byte of `GET /ui/r/bench/app` (newest first: the default),
  `?sort=name`, and the second page (its `rel=next` link), over a keep-alive connection, as a
  browser's first request would see them;
- time to a loaded page in Debian's chromium (headless, via tests/support/browser.py): the
  Navigation Timing of the page (`responseStart`, `domContentLoadedEventEnd`, `loadEventEnd`),
  the stylesheet and script included.

Each page is checked: it carries one page of rows (`ui.page_size`, 50), not N, and its next link.
Distribution has no web console, so there is no peer to divide by; the figures show what a page
costs and how that grows with N (sorting newest first reads every tag's link and time, but only
the page's manifests). Prints medians in milliseconds; exit status 0 when it ran, 1 with one
`bench: FAILED: ...` line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from tests.support.browser import start_browser  # noqa: E402
from tests.support.images import build_index, push_image, push_index, push_manifest, simple_image  # noqa: E402
from tests.support.servers import RunningServer, start_cargobay  # noqa: E402

REPOSITORY = "bench/app"
PAGE_ROWS = 50


class BenchError(Exception):
    pass


def seed(server: RunningServer, tags: int) -> None:
    image = simple_image("bench-ui")
    manifest = json.loads(image.manifest)
    with httpx.Client(timeout=60) as client:
        push_image(client, server.url, REPOSITORY, image, tag="tag-00000")
        for i in range(1, tags):
            distinct = json.dumps({**manifest, "annotations": {"bench.tag": str(i)}}).encode()
            push_manifest(client, server.url, REPOSITORY, f"tag-{i:05d}", distinct, image.media_type)
        push_index(client, server.url, REPOSITORY, build_index([simple_image("bench-a"),
                                                                simple_image("bench-b", "linux/arm64")]), "multi")


def fetch(connection: http.client.HTTPConnection, path: str) -> tuple[float, float, bytes]:
    """(seconds to the first byte of the answer, seconds to its last byte, body)."""
    start = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    first = response.read(1)
    ttfb = time.perf_counter() - start
    body = first + response.read()
    total = time.perf_counter() - start
    if response.status != 200:
        raise BenchError(f"GET {path} answered {response.status}")
    return ttfb, total, body


def check_page(body: bytes, path: str) -> str | None:
    """The page's next link; fails the bench unless it holds exactly one page of rows."""
    rows = body.count(b"<tr data-tag=")
    if rows != PAGE_ROWS:
        raise BenchError(f"{path} shows {rows} tag rows, expected one page of {PAGE_ROWS}")
    found = re.search(rb'<a rel="next" href="([^"]+)"', body)
    return found.group(1).decode().replace("&amp;", "&") if found else None


def measure(server: RunningServer, tags: int, rounds: int) -> dict[str, dict[str, float]]:
    first_page = f"/ui/r/{REPOSITORY}"
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    _, _, body = fetch(connection, first_page)
    second_page = check_page(body, first_page)
    if second_page is None:
        raise BenchError("the first page has no next link")
    pages = {"newest first": first_page, "by name": first_page + "?sort=name", "second page": second_page}
    for path in pages.values():
        check_page(fetch(connection, path)[2], path)
    samples: dict[str, dict[str, list[float]]] = {k: {"ttfb": [], "total": [], "bytes": []} for k in pages}
    browser_samples: dict[str, list[float]] = {"responseStart": [], "domContentLoadedEventEnd": [], "loadEventEnd": []}
    with tempfile.TemporaryDirectory(prefix="bench-ui-browser-") as profile_dir:
        browser = start_browser(Path(profile_dir) / "profile", server.url, Path(profile_dir) / "shots")
        try:
            for _ in range(rounds):
                for kind, path in pages.items():
                    ttfb, total, body = fetch(connection, path)
                    samples[kind]["ttfb"].append(ttfb * 1000)
                    samples[kind]["total"].append(total * 1000)
                    samples[kind]["bytes"].append(len(body))
                browser.driver.get(server.url + first_page)
                timing = browser.driver.execute_script(
                    "return performance.getEntriesByType('navigation')[0].toJSON()")
                for key in browser_samples:
                    browser_samples[key].append(float(timing[key]))
        finally:
            browser.driver.quit()
    connection.close()
    result = {kind: {k: statistics.median(v) for k, v in figures.items()} for kind, figures in samples.items()}
    result["browser"] = {k: statistics.median(v) for k, v in browser_samples.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", default="1000", help="comma-separated tag counts (default 1000)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=1, help="server workers (default 1: one process measured)")
    args = parser.parse_args()
    try:
        for count in (int(n) for n in args.tags.split(",")):
            with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
                server = start_cargobay(Path(tmp), workers=args.workers)
                try:
                    seed(server, count)
                    figures = measure(server, count, args.rounds)
                finally:
                    server.stop()
            print(f"\n{count} tags in {REPOSITORY}, {PAGE_ROWS} rows a page, median of {args.rounds} rounds")
            print(f"{'page':<14} {'first byte ms':>14} {'last byte ms':>13} {'KiB':>7}")
            for kind in ("newest first", "by name", "second page"):
                f = figures[kind]
                print(f"{kind:<14} {f['ttfb']:>14.1f} {f['total']:>13.1f} {f['bytes'] / 1024:>7.1f}")
            b = figures["browser"]
            print(f"chromium, newest first: first byte {b['responseStart']:.1f} ms, DOM ready "
                  f"{b['domContentLoadedEventEnd']:.1f} ms, loaded {b['loadEventEnd']:.1f} ms")
    except (BenchError, httpx.HTTPError, OSError) as exc:
        print(f"bench: FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A worker keeps the memory its requests' bodies pass through (registry.allocator): the PATCHes
of a chunked upload reuse it, instead of having the kernel fault in and zero every page of their
buffers again, as glibc's default trimming made it do for each request."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import REPO_ROOT, RunningServer, serving, start_cargobay

from .helpers import sha256

MiB = 1024 * 1024
PATCH = 2 * MiB
PATCHES = 16


@pytest.fixture(scope="module", params=["1", "2"], ids=["one-process", "two-workers"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The process that serves when there is one worker, and uvicorn's worker processes."""
    yield from serving(start_cargobay(tmp_path_factory.mktemp("allocator"),
                                      env={"CARGOBAY_HTTP_WORKERS": request.param}))


def _process_tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").iterdir():
            pids += [int(child) for child in (task / "children").read_text().split()]
        i += 1
    return pids


def _minor_faults(pids: list[int]) -> int:
    """Page faults served without I/O (a fresh page mapped and zeroed, among others), summed."""
    return sum(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7]) for pid in pids)


def _upload_in_patches(client: httpx.Client, repository: str) -> None:
    data = os.urandom(PATCH * PATCHES)
    location = client.post(f"/v2/{repository}/blobs/uploads/").headers["location"]
    for offset in range(0, len(data), PATCH):
        reply = client.patch(location, content=data[offset:offset + PATCH],
                             headers={"Content-Range": f"{offset}-{offset + PATCH - 1}"})
        assert reply.status_code == 202, reply.text
        location = reply.headers["location"]
    assert client.put(location, params={"digest": sha256(data)}).status_code == 201


def test_the_patches_of_an_upload_reuse_the_memory_their_bodies_passed_through(server: RunningServer) -> None:
    pids = _process_tree(server.process.pid)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        _upload_in_patches(client, "alloc/warm")  # the first upload grows the heap once
        before = _minor_faults(pids)
        _upload_in_patches(client, "alloc/again")
        per_patch = (_minor_faults(pids) - before) / PATCHES
    # Faulting a 2 MiB body in again is a fault a page (~530 a PATCH measured with 4 KiB pages,
    # without the setting); what is left is the request's own bookkeeping (0-30 measured).
    pages = PATCH // mmap.PAGESIZE
    assert per_patch < pages / 4, f"{per_patch:.0f} page faults a PATCH: the body's buffers are faulted in again"


def _taken(env: dict[str, str]) -> str:
    code = "from registry.allocator import keep_freed_memory; print(keep_freed_memory())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True,
                          env={"PATH": os.environ.get("PATH", ""), **env}).stdout.strip()


def test_the_setting_is_taken_by_this_c_library_unless_the_operator_set_malloc_up() -> None:
    """The test above means something only where the allocator is glibc's, as on Debian and Ubuntu;
    an operator's own malloc settings win."""
    assert _taken({}) == "True"
    assert _taken({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}) == "False"
    assert _taken({"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "1048576"}) == "False"

"""The CLI surface: progress on a terminal, --quiet, unpack/export wired to the store (fetching
first when needed), global options after the command."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
import tarfile

import httpx

from tests.support import images as im
from tests.support.images import push_image
from tests.support.servers import REPO_ROOT, RunningServer

from .conftest import PullerRunner


def test_progress_bars_on_a_terminal(upstream: RunningServer, http: httpx.Client, repo: str,
                                     puller: PullerRunner) -> None:
    push_image(http, upstream.url, repo, im.simple_image("tty", layer_count=2, layer_size=300_000), "v1")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "puller", "--store", str(puller.store), "fetch", "--plain-http",
                             f"{upstream.hostport}/{repo}:v1"], stdout=slave, stderr=slave, env=puller.env,
                            cwd=REPO_ROOT)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(60) == 0
    os.close(master)
    text = output.decode()
    assert "\x1b[2K" in text and "total" in text and "verified" in text and "Digest: sha256:" in text


def test_quiet_and_options_after_the_command(upstream: RunningServer, http: httpx.Client, repo: str,
                                             puller: PullerRunner) -> None:
    push_image(http, upstream.url, repo, im.simple_image("quiet"), "v1")
    # No --plain-http: a loopback registry is tried over HTTPS, then plain HTTP, like Docker does.
    result = puller.run("fetch", "-q", f"{upstream.hostport}/{repo}:v1", "--store",
                        str(puller.store / "elsewhere"), store=False)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert (puller.store / "elsewhere" / "index.json").exists()


def test_unpack_and_export_fetch_first(upstream: RunningServer, http: httpx.Client, repo: str,
                                       puller: PullerRunner) -> None:
    image = im.simple_image("assemble", layer_count=2)
    push_image(http, upstream.url, repo, image, "v1")
    ref = f"{upstream.hostport}/{repo}:v1"
    rootfs = puller.home / "rootfs"
    puller.ok("unpack", "--plain-http", ref, str(rootfs))  # not in the store yet: fetched first
    assert (rootfs / "layer1" / "assemble.bin").stat().st_size == 1024
    archive = puller.home / "image.tar"
    puller.ok("export", ref, str(archive), "--format", "docker-archive")
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    absent = puller.run("unpack", "--plain-http", f"{upstream.hostport}/{repo}:absent", str(puller.home / "x"))
    assert absent.returncode == 3
    # As root without --bundle the rootfs itself is private (it holds setuid-root files and device
    # nodes, readable by their image modes); --keep-root-mode gives it the image's mode.
    if os.geteuid() == 0:
        assert stat.S_IMODE(rootfs.stat().st_mode) == 0o700
        assert "warning: " in puller.ok("unpack", ref, str(puller.home / "private")).stdout
        puller.ok("unpack", ref, str(puller.home / "shared"), "--keep-root-mode")
        assert stat.S_IMODE((puller.home / "shared").stat().st_mode) == 0o755


def test_network_settings_out_of_range_are_one_line_usage_errors(puller: PullerRunner) -> None:
    for setting in ("retries = -1", "read_timeout = 0", "connect_timeout = -2.5", "backoff = nan", "retries = inf",
                    'retries = "5"'):
        puller.write_config(f"[network]\n{setting}\n")
        result = puller.run("fetch", "127.0.0.1:9/app:v1")
        key = setting.split()[0]
        assert result.returncode == 2 and result.stderr.startswith(f"puller: network.{key} must be"), result.stderr
        assert len(result.stderr.splitlines()) == 1


#: Runs the CLI in-process, then lists on stderr every module that was imported. `-S`: without the
#: site hooks, which in a development install (`pip install -e`) load `pathlib` and more before
#: any of ours; the puller needs nothing outside the standard library and this tree.
MODULES_AFTER = ("import sys\nfrom puller import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
                 "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n")


def modules_after(puller: PullerRunner, *args: str) -> set[str]:
    result = subprocess.run([sys.executable, "-S", "-c", MODULES_AFTER, "--store", str(puller.store), *args],
                            capture_output=True, text=True, env=puller.env, cwd=REPO_ROOT, timeout=60)
    line = result.stderr.rsplit("\nMODULES ", 1)[-1]
    assert result.stderr.count("\nMODULES ") == 1, result.stderr
    return set(line.split())


def test_commands_import_only_what_they_use(upstream: RunningServer, http: httpx.Client, repo: str,
                                            puller: PullerRunner) -> None:
    """Start-up time is import time: `--help` loads no store, config or client; `images` no HTTP
    stack and no unpacker; `pull` of a gzip image neither zstandard nor the exporter."""
    import distclient
    from puller.cli import HELP_DEFAULT_JOBS

    assert HELP_DEFAULT_JOBS == distclient.DEFAULT_JOBS  # what `--help` says without loading it
    heavy = {"zstandard", "urllib3", "ssl", "http.client", "tarfile", "puller.assemble.unpack",
             "puller.assemble.export", "distclient.client"}
    help_modules = modules_after(puller, "--help")  # (the fixture's config file is read: not for --help)
    assert "puller.cli" in help_modules
    assert not help_modules & (heavy | {"puller.store", "puller.config", "puller.progress", "distclient.hosts",
                                        "distclient.credentials", "tomllib", "dataclasses", "json", "logging",
                                        "typing", "pathlib"})
    images = modules_after(puller, "images")
    assert "puller.store" in images and not images & heavy
    push_image(http, upstream.url, repo, im.simple_image("imports", layer_count=2), "v1")
    pulled = modules_after(puller, "-q", "pull", "--plain-http", f"{upstream.hostport}/{repo}:v1",
                           str(puller.home / "rootfs"))
    assert {"distclient.http1", "puller.assemble.unpack"} <= pulled and (puller.home / "rootfs" / "layer1").is_dir()
    # Plain HTTP needs no ssl; no exporter, no zstd; neither urllib3 nor the stdlib's heavy HTTP and
    # thread-pool modules (email, logging come with them).
    unused = {"zstandard", "puller.assemble.export", "urllib3", "ssl", "http.client", "email", "logging",
              "concurrent.futures"}
    assert not pulled & unused, pulled & unused

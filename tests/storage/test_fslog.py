"""The filesystem driver's write-ahead log (storage.driver.fslog): what a crash leaves, a replay
puts right, and it never takes back what another path made durable.

A machine crash cannot be staged here; what it can leave can: a file written since the last
checkpoint missing, empty (its rename reached the disk, its bytes did not) or holding other bytes,
and the log's flushed records. Each test writes in one process, damages the files as a crash
could, and opens the store in a new process, which replays (no other process has it open)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage.driver import fslog
from storage.driver.fs import FilesystemDriver, FilesystemOptions

REPO_ROOT = Path(__file__).resolve().parents[2]


def in_new_process(root: Path, code: str, crash: bool = True, before: str = "", logged: bool = True,
                   status: int = 0) -> str:
    """Run `code` with `driver` a FilesystemDriver on `root`, in a process of its own; its stdout.
    With `crash` the process ends as a crash would (os._exit: no checkpoint at exit, the log keeps
    its records); `before` runs before the driver is made."""
    program = (f"import os, sys\nfrom storage.driver import fslog\nfrom storage.driver.fs import FilesystemDriver, "
               f"FilesystemOptions\n{textwrap.dedent(before)}\n"
               f"driver = FilesystemDriver(FilesystemOptions({str(root)!r}, write_ahead_log={logged}))\n"
               + textwrap.dedent(code) + ("\nsys.stdout.flush()\nos._exit(0)\n" if crash else ""))
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == status, done.stderr
    return done.stdout


def test_a_replay_writes_again_what_a_crash_lost_or_emptied(tmp_path: Path) -> None:
    in_new_process(tmp_path, """
        driver.put_many([("v2/a/link", b"sha256:aaaa"), ("v2/b/link", b"sha256:bbbb")])
        driver.put("v2/c/link", b"first")
        driver.put("v2/c/link", b"second")
    """)
    (tmp_path / "v2/a/link").unlink()  # the rename never reached the disk
    (tmp_path / "v2/b/link").write_bytes(b"")  # the rename did, the bytes did not
    (tmp_path / "v2/c/link").write_bytes(b"first")  # the last write's bytes were lost
    out = in_new_process(tmp_path, """
        print(driver.get("v2/a/link"), driver.get("v2/b/link"), driver.get("v2/c/link"))
    """)
    assert out.split() == ["b'sha256:aaaa'", "b'sha256:bbbb'", "b'second'"]


def test_a_replay_removes_what_was_deleted_after_it_was_logged(tmp_path: Path) -> None:
    in_new_process(tmp_path, """
        driver.put("v2/gone/link", b"sha256:aaaa")
        driver.put("v2/tree/one", b"1")
        driver.put("v2/tree/two", b"2")
        driver.delete("v2/gone/link")
        driver.delete("v2/tree")
    """)
    for key in ("v2/gone/link", "v2/tree/one"):  # came back, as a crash may bring back what a delete took
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"")
    in_new_process(tmp_path, "")
    assert not (tmp_path / "v2/gone/link").exists() and not (tmp_path / "v2/tree/one").exists()


def test_a_replay_never_takes_back_what_another_path_made_durable_after_the_log(tmp_path: Path) -> None:
    """A manifest's bytes are logged; a collection deletes them; the same bytes arrive again as an
    upload, renamed into the CAS by its own flushes. The replay must leave that blob alone: the
    push of it was told it is stored."""
    in_new_process(tmp_path, """
        driver.put("blobs/sha256/ab/abcd/data", b"manifest bytes")
        driver.delete("blobs/sha256/ab/abcd")
        writer = driver.atomic_writer("blobs/sha256/ab/abcd/data")
        writer.write(b"manifest bytes")
        writer.commit()
        upload = driver.writer("uploads/u1/data")
        upload.write(b"layer bytes")
        upload.commit_to("blobs/sha256/cd/cdef/data")
    """)
    out = in_new_process(tmp_path, """
        print(driver.get("blobs/sha256/ab/abcd/data"), driver.get("blobs/sha256/cd/cdef/data"))
    """)
    assert out.split() == ["b'manifest", "bytes'", "b'layer", "bytes'"]


def test_a_torn_record_ends_the_log_and_what_came_before_it_is_replayed(tmp_path: Path) -> None:
    in_new_process(tmp_path, """
        driver.put("v2/kept/link", b"kept")
    """)
    log = tmp_path / fslog.LOG_NAME
    whole = log.read_bytes()
    end = int.from_bytes(whole[16:24], "little")
    with open(log, "r+b") as f:  # a record whose bytes only partly reached the disk
        f.seek(end)
        f.write(b"CBR1" + os.urandom(40))
    (tmp_path / "v2/kept/link").unlink()
    out = in_new_process(tmp_path, 'print(driver.get("v2/kept/link"))')
    assert out.strip() == "b'kept'"


def test_a_full_log_is_checkpointed_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fslog, "CAPACITY", fslog.FIRST_SIZE * 2)
    driver = FilesystemDriver(tmp_path)
    for n in range(400):  # ~ 400 x 600 bytes: fills the log twice over
        driver.put(f"v2/r/{n}", bytes([n % 256]) * 560)
    assert all(driver.get(f"v2/r/{n}") == bytes([n % 256]) * 560 for n in range(400))
    assert (tmp_path / fslog.LOG_NAME).stat().st_size <= fslog.CAPACITY


def test_the_sweep_of_stale_temp_files_spares_the_log(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    driver.put("v2/x", b"1")
    assert driver.remove_stale_temp(time.time() + 60) == 0 and (tmp_path / fslog.LOG_NAME).exists()
    assert driver.get("v2/x") == b"1"


def test_without_the_log_nothing_is_logged(tmp_path: Path) -> None:
    driver = FilesystemDriver(FilesystemOptions(str(tmp_path), write_ahead_log=False))
    driver.put_many([("v2/a", b"1"), ("v2/b", b"2")])
    driver.delete("v2/a")
    assert not (tmp_path / fslog.LOG_NAME).exists() and driver.get("v2/b") == b"2"


def test_a_log_left_by_a_crash_is_replayed_by_a_process_that_has_it_turned_off(tmp_path: Path) -> None:
    in_new_process(tmp_path, 'driver.put("v2/a", b"logged")')
    (tmp_path / "v2/a").write_bytes(b"")
    in_new_process(tmp_path, "", logged=False)
    assert (tmp_path / "v2/a").read_bytes() == b"logged"
    # ... and emptied it: a write made without the log is not undone by the next start with it.
    in_new_process(tmp_path, 'driver.put("v2/a", b"unlogged")', logged=False)
    in_new_process(tmp_path, "")
    assert (tmp_path / "v2/a").read_bytes() == b"unlogged"


def test_a_clean_exit_empties_the_log_so_the_next_start_replays_nothing(tmp_path: Path) -> None:
    """A store nobody has open holds no records: what is changed by hand (or restored from a
    backup) before the next start stays as it was made."""
    in_new_process(tmp_path, 'driver.put("v2/a", b"pushed")', crash=False)
    (tmp_path / "v2/a").write_bytes(b"restored")
    in_new_process(tmp_path, "")
    assert (tmp_path / "v2/a").read_bytes() == b"restored"


def test_what_is_logged_after_the_log_filled_up_is_replayed_too(tmp_path: Path) -> None:
    small = f"fslog.CAPACITY = {fslog.FIRST_SIZE * 2}"
    in_new_process(tmp_path, """
        for n in range(400):  # ~ 400 x 600 bytes: past the end of the log twice
            driver.put(f"v2/r/{n}", bytes([n % 256]) * 560)
    """, before=small)
    for n in range(400):
        (tmp_path / f"v2/r/{n}").write_bytes(b"")  # what a crash may leave of files written since a checkpoint
    in_new_process(tmp_path, "", before=small)
    recent = [n for n in range(400) if (tmp_path / f"v2/r/{n}").read_bytes() == bytes([n % 256]) * 560]
    assert recent and recent == list(range(recent[0], 400))  # those since the last checkpoint, to the end


def test_a_put_that_failed_is_not_finished_by_a_replay(tmp_path: Path) -> None:
    """The disk fails part-way through a push's files: the push is answered an error, and a
    replay must not write the rest of it later (its blobs may be collected by then)."""
    out = in_new_process(tmp_path, """
        import storage.driver.fsfiles as fs
        driver.put("tags/latest", b"sha256:old")
        real, calls = fs.write_unflushed, []
        def failing(path, data):
            calls.append(path)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            real(path, data)
        fs.write_unflushed = failing
        try:
            driver.put_many([("revisions/new", b"sha256:new"), ("tags/latest", b"sha256:new")])
        except OSError as exc:
            print("failed:", exc.strerror)
    """)
    assert out.strip() == "failed: No space left on device"
    (tmp_path / "tags/latest").write_bytes(b"")  # its bytes lost in a crash, as a crash may
    in_new_process(tmp_path, "")
    assert (tmp_path / "tags/latest").read_bytes() == b"sha256:old"


def test_what_a_process_that_died_while_writing_logged_is_finished_by_the_next_writer(tmp_path: Path) -> None:
    """A worker killed between the flush of its record and the last of its files: the next
    process to write (another worker, still running) finishes them first, so what the files say
    is what a replay would give."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from storage.driver.fs import FilesystemDriver
        driver = FilesystemDriver({str(tmp_path)!r})  # keeps the store open: no replay
        print("open", flush=True)
        sys.stdin.readline()
        driver.put("v2/other", b"x")
        print(open({str(tmp_path / "v2/b")!r}, "rb").read().decode(), flush=True)
    """)], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "open"
    in_new_process(tmp_path, """
        import storage.driver.fsfiles as fs
        real, calls = fs.write_unflushed, []
        def dying(path, data):
            calls.append(path)
            if len(calls) == 2:
                os._exit(9)  # killed with the lock held, one file written of two
            real(path, data)
        fs.write_unflushed = dying
        driver.put_many([("v2/a", b"first"), ("v2/b", b"second")])
    """, crash=False, status=9)
    assert not (tmp_path / "v2/b").exists()
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "second"
    assert holder.wait(timeout=60) == 0


def test_a_replay_that_died_is_done_again_by_the_next_process_even_if_not_alone(tmp_path: Path) -> None:
    """After a crash the first process to open the store replays; if it dies doing so, one that
    was waiting for it (so not alone) replays instead of serving what the crash left."""
    in_new_process(tmp_path, 'driver.put_many([("v2/a", b"logged"), ("v2/b", b"logged too")])')
    (tmp_path / "v2/a").write_bytes(b"")
    (tmp_path / "v2/b").write_bytes(b"")
    replayer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        import storage.driver.fsfiles as fs
        def stuck(path, data):
            print("replaying", flush=True)
            time.sleep(600)
        fs.write_unflushed = stuck
        from storage.driver.fs import FilesystemDriver
        FilesystemDriver({str(tmp_path)!r})
    """)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert replayer.stdout is not None and replayer.stdout.readline().strip() == "replaying"
    waiter = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from storage.driver.fs import FilesystemDriver
        FilesystemDriver({str(tmp_path)!r})  # waits for the replayer's lock
        print(open({str(tmp_path / "v2/a")!r}, "rb").read().decode(), flush=True)
    """)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # the waiter reaches the lock (if it comes later it is alone, and replays all the same)
    replayer.send_signal(signal.SIGKILL)
    replayer.wait()
    assert waiter.stdout is not None and waiter.stdout.readline().strip() == "logged"
    assert waiter.wait(timeout=60) == 0


def test_a_put_whose_flush_failed_is_not_finished_by_a_replay(tmp_path: Path) -> None:
    """The log's own flush fails (an I/O error): the put is answered an error, and its record,
    written but maybe not flushed, must not be replayed later over what the files hold."""
    out = in_new_process(tmp_path, """
        driver.put("tags/latest", b"sha256:old")
        real, calls = fslog._datasync, []
        def failing(fd):
            calls.append(fd)
            if len(calls) == 1:
                raise OSError(5, "Input/output error")
            real(fd)
        fslog._datasync = failing
        try:
            driver.put("tags/latest", b"sha256:new")
        except OSError as exc:
            print("failed:", exc.strerror)
        print(driver.get("tags/latest"))
    """)
    assert out.split("\n")[:2] == ["failed: Input/output error", "b'sha256:old'"]
    (tmp_path / "tags/latest").write_bytes(b"")  # its bytes lost in a crash, as a crash may
    in_new_process(tmp_path, "")
    assert (tmp_path / "tags/latest").read_bytes() == b"sha256:old"

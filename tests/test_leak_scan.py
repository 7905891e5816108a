"""The session-wide secret scan (tests/support/leaks.py, run by tests/conftest.py) catches what it
must: a planted secret of each kind it is told about and a JWT, in the files it watches, naming the
file and the kind and never the secret; and a leak fails a pytest run that is otherwise green."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.leaks import JWT_KIND, Watch, report, watch_hashed_passwords

ROOT = Path(__file__).resolve().parents[1]
PLANTED = "robot-Planted-Secret-4f1d9a"
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJl"


def test_the_scan_names_file_line_and_kind_of_each_planted_secret(tmp_path: Path) -> None:
    watch = Watch()
    clean, leaky, audit = tmp_path / "clean.log", tmp_path / "leaky.log", tmp_path / "audit.jsonl"
    clean.write_text("INFO registry: started\nINFO access 127.0.0.1 GET /v2/ 401\n")
    leaky.write_text(f"INFO started\nDEBUG auth: secret is {PLANTED}\nINFO Authorization: Bearer {JWT}\n")
    audit.write_text('{"action": "login.failed", "user": "alice"}\n{"detail": "s3 key moto-Secret-Key-1"}\n')
    for path in (clean, leaky, audit, tmp_path / "never-written.log"):
        watch.file(path)
    watch.secret(PLANTED, "robot secret")
    watch.secret("moto-Secret-Key-1", "S3 secret key")
    watch.secret("short", "password")  # too short to look for: it would match innocent text
    undo = watch_hashed_passwords(watch)
    try:
        import bcrypt

        bcrypt.hashpw(b"alice-Hashed-Pw-1", bcrypt.gensalt(4))
    finally:
        undo()
    audit.write_text(audit.read_text() + '{"detail": "alice-Hashed-Pw-1"}\n')

    found = watch.scan()
    assert [(leak.path.name, leak.kind, leak.line) for leak in found] == [
        ("audit.jsonl", "S3 secret key", 2), ("audit.jsonl", "password", 3),
        ("leaky.log", "robot secret", 2), ("leaky.log", JWT_KIND, 3)]
    text = "\n".join(report(found))
    assert str(leaky) in text and "robot secret" in text
    assert PLANTED not in text and JWT not in text and "alice-Hashed-Pw-1" not in text


LEAKING_SESSION = f"""
import bcrypt
from tests.support.leaks import remember_secret, watch_file

def test_a_server_that_logs_a_password(tmp_path):
    log = watch_file(tmp_path / "cargobay-1.log")
    hashed = bcrypt.hashpw(b"carol-Leaked-Pw-7", bcrypt.gensalt(4))  # as the htpasswd helpers do
    log.write_text(f"INFO htpasswd {{hashed!r}}\\nDEBUG login carol with carol-Leaked-Pw-7\\n")
    remember_secret("{PLANTED}", "robot secret")
"""


def test_a_leak_fails_an_otherwise_green_run_and_is_named_not_shown(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(LEAKING_SESSION)
    env = {k: v for k, v in os.environ.items() if k != "CARGOBAY_REQUIRE_TOOLS"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"),
                          str(tmp_path / "test_sample.py")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert "secrets in server logs or audit files" in run.stdout
    assert "cargobay-1.log:2: a password" in run.stdout
    assert "carol-Leaked-Pw-7" not in run.stdout + run.stderr and PLANTED not in run.stdout

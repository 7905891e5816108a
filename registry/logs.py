"""The server's logs: `log.format` text or JSON lines, and the access log (`log.access`).

Every record, ours and uvicorn's, goes through one handler on stderr. In JSON each line is one
object: `time` (UTC, ISO 8601), `level`, `logger`, `message`, and for records made while serving a
request (registry.requestinfo.CURRENT) its `request_id`, `client`, `user` and `repository`. An
access line adds `action`, `method`, `path` (with its query string), `route`, `status`,
`bytes_in`, `bytes_out` and `duration_ms`.

No secret ever reaches a line: nothing here logs a header or a body; the registry's API takes no
secret in a query string, and a query parameter whose name says it might hold one (`password`,
`token`, `secret`, `signature`, `credential`, `key`…) is shown as `***` all the same; the AWS SDK's
loggers (which log signed requests at debug level) are held at INFO.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import re
import sys
import time
from typing import Any
from urllib.parse import quote, unquote

from .requestinfo import CURRENT, RequestInfo
from .settings import LogSettings

ACCESS_LOGGER = "cargobay.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_QUIET = ("botocore", "boto3", "s3transfer", "urllib3")
_SECRET_NAME = re.compile(r"pass|token|secret|signature|credential|key|auth", re.IGNORECASE)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=._~-]*")
_text = json.encoder.encode_basestring  # a str as a JSON string literal (C speed)
#: The handler `configure` installed (the access log writes its lines to its stream).
_HANDLER: logging.StreamHandler[Any] | None = None


def shown_target(path: str, query: str) -> str:
    """The request target as an access line shows it: the path, and the query with the values of
    parameters whose names suggest a secret replaced by `***`."""
    if not query:
        return path
    shown = []
    for pair in query.split("&"):
        name, equals, _value = pair.partition("=")
        shown.append(f"{name}=***" if equals and _SECRET_NAME.search(unquote(name)) else pair)
    return f"{path}?{'&'.join(shown)}"


def _utc(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the request's fields when it has one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _utc(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage()}
        access: dict[str, Any] | None = getattr(record, "access", None)
        info = CURRENT.get()
        if access is not None:
            line.update(access)
        elif info is not None:
            line.update(request_id=info.id, client=info.client, user=info.user, repository=info.repository)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(settings: LogSettings) -> None:
    """Route every logger to stderr in `settings.format` at `settings.level` (uvicorn's too: its
    own logging config is not used: registry.__main__ passes `log_config=None`)."""
    global _HANDLER
    handler = _HANDLER = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # ours is the access log
    # The AWS SDK logs signed request headers at debug level: never let them into our logs.
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


class AccessLog:
    """A RequestObserver: one INFO line per request on the `cargobay.access` logger, in the
    configured format. It runs on the event loop for every request, so it costs what it must:

    - the line is put together by hand (a logging record, %-formatting and a generic JSON encoder
      cost several times as much: bench/bench_observability.py);
    - the lines of the requests that end in one turn of the event loop are written together, at
      its end, in one write to the configured handler's file under the handler's lock (a system
      call per line, with the file system updating the log's times each time, cost more than the
      line itself under load), so a line reaches the log a moment after its request ended;
    - without `configure` it goes through `logging` like any record."""

    def __init__(self, json_lines: bool = False) -> None:
        self.log = logging.getLogger(ACCESS_LOGGER)
        self.json_lines = json_lines
        self._second = -1
        self._stamp = ""
        # The handler's stream flushes every record, so writing a line straight to its file (one
        # system call, no text layer) keeps the order of lines; a stream with no file is written.
        self._fd = _file_of(_HANDLER)
        self._pending: list[str] = []  # lines waiting for the end of this turn of the loop
        atexit.register(self.flush)

    def request_done(self, info: RequestInfo) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        duration_ms = round(info.seconds * 1000, 2)
        path = info.path if _PLAIN_PATH.fullmatch(info.path) else quote(info.path, safe=_PATH_SAFE)
        target = shown_target(path, info.query)
        handler = _HANDLER
        if handler is None or self.log.handlers or not self.log.propagate:
            self.log.info("%s", self._message(info, target, duration_ms),
                          extra={"access": _fields(info, target, duration_ms)})
            return
        created = time.time()
        if self.json_lines:
            # The fields say it all; the message is the short line a person scans for.
            line = (f'{{"time": "{self._iso(created)}", "level": "info", "logger": "{ACCESS_LOGGER}", '
                    f'"message": {_text(f"{info.method} {target} {info.status}")}, '
                    f'"request_id": {_text(info.id)}, "client": {_text(info.client)}, '
                    f'"user": {_text(info.user)}, "repository": {_text(info.repository)}, '
                    f'"action": "{info.action}", "method": {_text(info.method)}, "path": {_text(target)}, '
                    f'"route": {_text(info.route)}, "status": {info.status}, "bytes_in": {info.bytes_in}, '
                    f'"bytes_out": {info.bytes_out}, "duration_ms": {duration_ms}}}\n')
        else:
            line = f"{self._local(created)} INFO {ACCESS_LOGGER}: {self._message(info, target, duration_ms)}\n"
        self._pending.append(line)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # called off the loop: nothing to wait for
                self.flush()

    def flush(self) -> None:
        """Write the lines waiting, in one write (at the end of the loop's turn, and at exit)."""
        lines, self._pending = self._pending, []
        handler = _HANDLER
        if not lines or handler is None:
            return
        text = "".join(lines)
        handler.acquire()  # whole lines: another thread's record never lands inside one of them
        try:
            if self._fd is not None:
                _write_all(self._fd, text.encode())
            else:
                handler.stream.write(text)
                handler.stream.flush()
        finally:
            handler.release()

    @staticmethod
    def _message(info: RequestInfo, target: str, duration_ms: float) -> str:
        return (f'{info.client} {info.user or "-"} "{info.method} {target}" {info.status} in={info.bytes_in} '
                f"out={info.bytes_out} {duration_ms:.1f}ms id={info.id}")

    def _iso(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def _local(self, created: float) -> str:
        """As logging's default `%(asctime)s`: local time, `2026-12-07 10:15:02,118`."""
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((created - second) * 1000):03d}"


def _file_of(handler: logging.StreamHandler[Any] | None) -> int | None:
    try:
        return handler.stream.fileno() if handler is not None else None
    except (AttributeError, OSError, ValueError):  # io.StringIO and the like
        return None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _fields(info: RequestInfo, target: str, duration_ms: float) -> dict[str, Any]:
    return {"request_id": info.id, "client": info.client, "user": info.user, "repository": info.repository,
            "action": info.action, "method": info.method, "path": target, "route": info.route,
            "status": info.status, "bytes_in": info.bytes_in, "bytes_out": info.bytes_out,
            "duration_ms": duration_ms}

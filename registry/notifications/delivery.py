"""One POST of an envelope to an endpoint (urllib3, blocking: the dispatcher runs it in the thread
pool). Delivered means a 2xx answer within the endpoint's `timeout`; anything else is a failure to
retry. What is said of a failure names neither the URL (its query may hold a token) nor the key
or signature."""

from __future__ import annotations

import urllib3

from .envelope import EVENTS_MEDIA_TYPE, SIGNATURE_HEADER, sign

#: Of an answer's body only this much is read (receivers say little; a big answer is not kept).
_ANSWER_LIMIT = 64 * 1024


class Sender:
    def __init__(self, url: str, secret: bytes, timeout: float) -> None:
        self.url = url
        self._secret = secret
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=1, retries=False,
                                         timeout=urllib3.Timeout(total=timeout))

    def post(self, body: bytes) -> str | None:
        """Send one envelope. None: delivered; otherwise why not, in a few words."""
        headers = {"Content-Type": EVENTS_MEDIA_TYPE, "User-Agent": "cargobay-notifications"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        try:
            response = self._pool.request("POST", self.url, body=body, headers=headers, redirect=False,
                                          preload_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return _why(exc)
        complete = False
        try:
            complete = len(response.read(_ANSWER_LIMIT)) < _ANSWER_LIMIT or not response.read(1)
        except (urllib3.exceptions.HTTPError, OSError):
            pass  # the status still counts: the receiver answered
        finally:
            if complete:
                response.release_conn()
            else:
                response.close()
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status}"

    def close(self) -> None:
        self._pool.clear()


def _why(exc: BaseException) -> str:
    """A failure in a few words: the kind of error and the system's reason, never the URL."""
    reason: BaseException | None = exc
    for _ in range(5):  # urllib3 wraps the socket's error once or twice
        if reason is None or isinstance(reason, OSError):
            break
        reason = getattr(reason, "reason", None) or reason.__cause__ or reason.__context__
    words = type(exc).__name__
    if isinstance(reason, OSError) and reason.strerror:
        words += f" ({reason.strerror})"
    return words

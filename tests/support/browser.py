"""A real browser for the web console's tests: Debian's chromium driven by its chromedriver through
Selenium, headless, offline, with a fresh profile.

Nothing is downloaded: the driver's path goes to Selenium's `Service` and the browser's to
`options.binary_location`, so Selenium Manager never runs (and SE_OFFLINE=true in case it would).
A missing chromium or chromedriver skips on a developer machine and fails under
CARGOBAY_REQUIRE_TOOLS=1, like every other tool (tests/support/tools.py).

`Browser.visit` (and `Browser.settle` after a click or a submit) checks what a user would notice on
every page: the document's status, no console error, no request to any host but the registry, every
subresource from `/ui/static/`, the Content-Security-Policy header, and the page's landmarks.
`Browser.screenshots` writes the page at 375 and 1920 px into the artifacts directory, and checks
that at 375 px nothing scrolls sideways.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from .servers import REPO_ROOT
from .tools import require_tool

WIDTHS = (375, 1920)
HEIGHT = 1000
MAX_SHOT_HEIGHT = 8000  # px: a full-page screenshot stops here (a page of 50 rows fits)
SCROLL_TOLERANCE = 2  # px of sideways overflow at 375 px that nobody could scroll to notice
PAGE_TIMEOUT = 30  # seconds for a page to load or a wait to come true
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
#: Schemes that never leave the machine (inline images, object URLs, the browser's own pages such as
#: the new tab page it opens with): not requests to a host.
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-untrusted", "chrome-error", "devtools"}
_FAILED_LOAD = re.compile(r"^(\S+) - Failed to load resource: the server responded with a status of (\d+)")


def artifacts_dir() -> Path:
    """Where the screenshots go: `$CARGOBAY_ARTIFACTS/ui`, by default `tests-artifacts/ui` at the repo root."""
    return Path(os.environ.get("CARGOBAY_ARTIFACTS") or REPO_ROOT / "tests-artifacts") / "ui"


@dataclass
class Document:
    """The last top-level document the browser received."""

    url: str
    status: int
    headers: dict[str, str]  # names lowercased


@dataclass
class Browser:
    driver: webdriver.Chrome
    origin: str  # scheme://host:port of the registry: the only host a page may reach
    shots: Path
    written: list[Path] = field(default_factory=list)

    # -- navigation ---------------------------------------------------------------------------------
    def visit(self, url: str, status: int | None = 200) -> Document:
        """Load `url` (absolute, or a path on the registry) and check the page (see `check`)."""
        self.driver.get(url if "://" in url else self.origin + url)
        return self.check(status)

    def settle(self, action: Any, status: int | None = 200) -> Document:
        """Run `action` (a click, a submit, a key press) that loads another page, wait for it, check it."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        action()
        WebDriverWait(self.driver, PAGE_TIMEOUT).until(expected_conditions.staleness_of(old))
        self.wait_loaded()
        return self.check(status)

    def wait_loaded(self) -> None:
        WebDriverWait(self.driver, PAGE_TIMEOUT).until(
            lambda d: d.execute_script("return document.readyState") == "complete")

    def wait_for(self, condition: Any, what: str, timeout: float = PAGE_TIMEOUT) -> Any:
        """Wait, with a deadline, until `condition(driver)` is truthy; its value."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(condition)
        except TimeoutException:
            where = self.driver.current_url
            raise AssertionError(f"gave up after {timeout} s waiting for {what}; at {where}") from None

    # -- what is on the page ------------------------------------------------------------------------
    def one(self, css: str) -> WebElement:
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        assert len(found) == 1, f"expected one {css!r} on {self.driver.current_url}, found {len(found)}"
        return found[0]

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def attrs(self, css: str, *names: str) -> list[dict[str, str]]:
        """The named attributes ("" when missing) of every element matching `css`, in page order (one
        script for a whole table, not one WebDriver call per cell)."""
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "return Array.from(document.querySelectorAll(arguments[0]),"
            " e => Object.fromEntries(arguments[1].map(n => [n, e.getAttribute(n) ?? ''])))", css, list(names))

    def path(self) -> str:
        """The current page's path, without its query."""
        return urlsplit(self.driver.current_url).path

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.driver.current_url).query)

    def text(self, css: str) -> str:
        """The text of the one element `css` matches, shown or not (a closed <details> hides it from `.text`)."""
        return self.one(css).get_attribute("textContent") or ""

    # -- the checks after every page ----------------------------------------------------------------
    def check(self, status: int | None = 200) -> Document:
        """The page just loaded: its status is `status` (None: any), it logged no console error (but the
        browser's own line about an expected error status), it reached no host but the registry and
        loaded subresources only from /ui/static/, it was sent with `default-src 'self'`, and it has
        a <main>, a <nav> and an <h1>."""
        document, errors = self.read_logs(expected_status=status)
        assert document is not None, f"no document was loaded ({self.driver.current_url})"
        assert status is None or document.status == status, (
            f"{document.url} answered {document.status}, expected {status}")
        assert not errors, f"console errors on {document.url}:\n" + "\n".join(errors)
        csp = document.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp, f"{document.url}: Content-Security-Policy is {csp!r}"
        for landmark in ("main", "nav", "h1"):
            assert self.driver.find_elements(By.TAG_NAME, landmark), f"{document.url} has no <{landmark}>"
        return document

    def drain_logs(self) -> None:
        """Read (and so clear) both logs: no console error, no request elsewhere since the last check."""
        _, errors = self.read_logs()
        assert not errors, f"console errors on {self.driver.current_url}:\n" + "\n".join(errors)

    def read_logs(self, expected_status: int | None = 0) -> tuple[Document | None, list[str]]:
        """Read (and so clear) both logs, asserting that every request went to the registry: the
        last document received and the console errors, but the line about the document's own status
        when that is `expected_status` (None: whatever it is; 0: none expected)."""
        document: Document | None = None
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                self._check_request(params["request"]["url"], params.get("type", ""))
            elif message["method"] == "Network.responseReceived" and params.get("type") == "Document":
                response = params["response"]
                document = Document(response["url"], int(response["status"]),
                                    {k.lower(): v for k, v in response.get("headers", {}).items()})
        errors = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            failed = _FAILED_LOAD.match(entry["message"])
            if (failed and document and document.status >= 400 and failed.group(1) == document.url
                    and int(failed.group(2)) == document.status and expected_status in (None, document.status)):
                continue  # Chrome logs an error page's own status as a console error: it is the page asked for
            errors.append(entry["message"])
        return document, errors

    def _check_request(self, url: str, kind: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES:
            return
        assert f"{parts.scheme}://{parts.netloc}" == self.origin, f"a page asked another host for {url}"
        if kind != "Document":
            assert parts.path.startswith("/ui/static/"), f"a page loaded {url} ({kind}), not from /ui/static/"

    # -- screenshots ----------------------------------------------------------------------------------
    def screenshots(self, name: str) -> None:
        """The page at each width in WIDTHS as `<name>-<width>.png` (full page, up to MAX_SHOT_HEIGHT);
        at the narrowest, nothing may scroll sideways. The window ends at the widest size."""
        for width in WIDTHS:
            self.resize(width)
            if width == min(WIDTHS):
                scroll = self.driver.execute_script("return document.documentElement.scrollWidth")
                assert scroll <= width + SCROLL_TOLERANCE, (
                    f"{self.driver.current_url} scrolls sideways at {width} px (scrollWidth {scroll})")
            metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
            height = min(int(metrics["cssContentSize"]["height"]), MAX_SHOT_HEIGHT)
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": max(height, 1), "scale": 1}})
            target = self.shots / f"{name}-{width}.png"
            target.write_bytes(base64.b64decode(shot["data"]))
            self.written.append(target)
        self.drain_logs()  # a page that logs an error when resized fails too

    def resize(self, width: int) -> None:
        """Make the page's viewport `width` CSS px wide (headless windows have no frame, but check)."""
        self.driver.set_window_size(width, HEIGHT)
        inner = self.driver.execute_script("return window.innerWidth")
        if inner != width:  # a window frame after all: widen the window by it
            self.driver.set_window_size(2 * width - inner, HEIGHT)
        self.wait_for(lambda d: d.execute_script("return window.innerWidth") == width, f"a {width} px viewport")


def start_browser(profile: Path, origin: str, shots: Path | None = None) -> Browser:
    """Chromium with a new empty profile in `profile`; skips (or fails in CI) when it is not installed."""
    browser_path = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    os.environ["SE_OFFLINE"] = "true"  # should Selenium ever consider its manager: never download
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={max(WIDTHS)},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(profile.parent / "chromedriver.log"),
                      env={**os.environ, "SE_OFFLINE": "true"})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    shots = shots or artifacts_dir()
    shots.mkdir(parents=True, exist_ok=True)
    driver.get_log("performance")  # what the browser did before the tests asked for anything
    driver.get_log("browser")
    return Browser(driver, origin, shots)


def browsing(browser: Browser) -> Iterator[Browser]:
    """For fixtures: yield the browser, quit it afterwards."""
    try:
        yield browser
    finally:
        browser.driver.quit()

"""The web console with auth on, in a real browser: logging in by keyboard alone, a wrong password,
the session cookie, logging out, a session that expires, a user who may not pull a repository and
sees nothing of it (neither in the list nor by its URL), delete links only for who may delete, and a
forged delete form (a real session cookie, no CSRF token) refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from tests.registry.test_auth_api import PASSWORDS, auth_config, bearer, get_token
from tests.support.browser import Browser
from tests.support.images import OCI_MANIFEST, push_image, simple_image
from tests.support.servers import RunningServer, serving, start_cargobay

COOKIE = "cargobay_ui"
RULES = """\
anonymous_pull: ["public/*"]
rules:
  - users: [alice]
    repositories: ["team-a/*"]
    actions: [pull]
  - users: [admin]
    repositories: ["*"]
    actions: ["*"]
    catalog: true
"""
USERS = {user: PASSWORDS[user] for user in ("alice", "admin")}
REPOSITORIES = ("public/base", "team-a/app", "secret/vault")
MAX_TABS = 30  # Tab presses to reach the user name field from the top of the login page


def ui_auth_config(workdir: Path, **ui: object) -> dict[str, Any]:
    config = auth_config(workdir, USERS, RULES)
    config["ui"] = ui
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("ui-auth")
    yield from serving(start_cargobay(workdir, config=ui_auth_config(workdir)))


@pytest.fixture(scope="module")
def digests(server: RunningServer) -> dict[str, str]:
    """One image in each repository (pushed by admin over HTTP): the repository -> its v1 digest."""
    pushed = {}
    for repo in REPOSITORIES:
        image = simple_image(f"ui-auth-{repo}", layer_count=1)
        with httpx.Client(headers=bearer(get_token(server.url, "admin", f"repository:{repo}:pull,push")),
                          timeout=30) as client:
            push_image(client, server.url, repo, image, "v1")
        pushed[repo] = image.digest
    return pushed


@pytest.fixture
def anonymous(browser: Browser) -> Iterator[Browser]:
    """The browser with no session (cookies of every loopback port are one jar: clear it both ways)."""
    browser.driver.delete_all_cookies()
    yield browser
    browser.driver.delete_all_cookies()


def repositories(browser: Browser, query: str = "") -> set[str]:
    browser.visit(f"/ui/?q={query}" if query else "/ui/")
    return {row["data-repository"] for row in browser.attrs("#repositories tr[data-repository]", "data-repository")}


def log_in(browser: Browser, user: str, password: str, start: str = "/ui/login", status: int | None = 200) -> None:
    """Fill the login form at `start` and submit it (by mouse-free Selenium calls, not the keyboard test)."""
    if start:
        browser.visit(start)
    username = browser.one("form#login input[name=username]")
    username.clear()
    username.send_keys(user)
    browser.one("form#login input[name=password]").send_keys(password)
    browser.settle(browser.one('form#login [type="submit"]').click, status)


def focused(browser: Browser) -> str:
    return browser.driver.execute_script("return document.activeElement && document.activeElement.name") or ""


def type_keys(browser: Browser, *keys: str) -> None:
    ActionChains(browser.driver).send_keys(*keys).perform()


def keyboard_login(browser: Browser, user: str, password: str) -> None:
    """From the loaded login page: Tab to the user name, type, Tab, type (Enter is the caller's: it loads a page)."""
    for _ in range(MAX_TABS):
        if focused(browser) == "username":
            break
        type_keys(browser, Keys.TAB)
    assert focused(browser) == "username", f"{MAX_TABS} Tab presses never reached the user name field"
    ActionChains(browser.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()  # select all
    type_keys(browser, user, Keys.TAB)
    assert focused(browser) == "password", "Tab from the user name does not lead to the password"
    type_keys(browser, password)
    fields = browser.driver.execute_script("return [document.getElementById('username').value,"
                                           " document.getElementById('password').value]")
    assert fields == [user, password], "the keyboard did not fill in the form"


def test_log_in_by_keyboard_a_wrong_password_and_log_out(anonymous: Browser, server: RunningServer,
                                                         digests: dict[str, str]) -> None:
    browser = anonymous
    assert repositories(browser) == {"public/base"}  # anonymous: what anonymous_pull allows
    browser.screenshots("auth-anonymous")
    browser.visit("/ui/r/team-a/app", status=404)

    browser.visit("/ui/login")
    browser.screenshots("login")
    keyboard_login(browser, "alice", "not-her-password")
    browser.settle(lambda: type_keys(browser, Keys.ENTER), status=None)
    assert browser.path() == "/ui/login"
    assert browser.text('p#login-error[role="alert"]').strip()
    assert browser.driver.get_cookie(COOKIE) is None
    assert not browser.one("form#login input[name=password]").get_attribute("value")
    browser.screenshots("login-error")

    keyboard_login(browser, "alice", USERS["alice"])
    browser.settle(lambda: type_keys(browser, Keys.ENTER))
    assert browser.path() == "/ui/"
    cookie = browser.driver.get_cookie(COOKIE)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    assert COOKIE not in browser.driver.execute_script("return document.cookie")
    assert repositories(browser) == {"public/base", "team-a/app"}
    browser.visit("/ui/r/team-a/app")
    assert browser.one('#tags tr[data-tag="v1"]').get_attribute("data-digest") == digests["team-a/app"]

    copied = cookie["value"]  # what a thief would have taken before the logout
    assert httpx.get(f"{server.url}/ui/r/team-a/app", cookies={COOKIE: copied}).status_code == 200
    logout = browser.one('form#logout[method="post"] [type="submit"]')
    browser.settle(logout.click)
    assert browser.driver.get_cookie(COOKIE) is None
    browser.visit("/ui/r/team-a/app", status=404)
    assert repositories(browser) == {"public/base"}
    # The logout ended the session itself, not only the browser's copy of the cookie.
    assert httpx.get(f"{server.url}/ui/r/team-a/app", cookies={COOKIE: copied}).status_code == 404
    log_in(browser, "alice", USERS["alice"])  # a new login after it works
    assert repositories(browser) == {"public/base", "team-a/app"}
    browser.settle(browser.one('form#logout[method="post"] [type="submit"]').click)


def test_a_forbidden_repository_shows_nowhere(anonymous: Browser, server: RunningServer,
                                              digests: dict[str, str]) -> None:
    browser = anonymous
    log_in(browser, "alice", USERS["alice"])
    secret = digests["secret/vault"]
    assert "secret/vault" not in repositories(browser)
    assert repositories(browser, "vault") == set()
    browser.one("p#empty")
    pages = {}
    for path in ("/ui/r/secret/vault", "/ui/r/secret/vault:v1", f"/ui/r/secret/vault@{secret}",
                 "/ui/r/secret/no-such-repository"):
        browser.visit(path, status=404)
        source = browser.driver.page_source
        assert secret not in source
        pages[path] = browser.text("main").replace(path.removeprefix("/ui/r/").split("@")[0].split(":")[0], "NAME")
    browser.screenshots("auth-not-found")
    assert pages["/ui/r/secret/vault"] == pages["/ui/r/secret/no-such-repository"], "forbidden is not unknown"

    # alice may pull team-a/app, not delete: no delete link, and the delete page and its form are refused
    browser.visit("/ui/r/team-a/app")
    assert not browser.all("a.delete")
    cookies = {c["name"]: c["value"] for c in browser.driver.get_cookies()}
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=30) as client:
        assert client.get("/ui/r/team-a/app:v1/delete").status_code in (403, 404, 405)
        assert client.post("/ui/r/team-a/app:v1/delete", data={}).status_code in (403, 404, 405)
        assert client.get("/ui/operations").status_code in (403, 404)  # no catalog right
    assert_still_tagged(server, "team-a/app", digests["team-a/app"])


def test_delete_links_only_for_who_may_delete_and_a_forged_form_is_refused(
        anonymous: Browser, server: RunningServer, digests: dict[str, str]) -> None:
    browser = anonymous
    log_in(browser, "admin", USERS["admin"])
    assert repositories(browser) == set(REPOSITORIES)
    browser.visit("/ui/r/team-a/app")
    browser.one('#tags tr[data-tag="v1"] a.delete')
    browser.visit("/ui/operations")  # admin has the catalog right
    cookies = {c["name"]: c["value"] for c in browser.driver.get_cookies()}
    assert COOKIE in cookies
    with httpx.Client(base_url=server.url, cookies=cookies, follow_redirects=False, timeout=30) as forger:
        for data in ({}, {"csrf": "forged-token"}):
            r = forger.post("/ui/r/team-a/app:v1/delete", data=data)
            assert r.status_code == 403, (data, r.status_code, r.text[:300])
    # A CSRF cookie planted from elsewhere (a sibling subdomain can set one) with the same token in the
    # form: the token of a logged-in user's form is bound to the session, so it is worth nothing.
    planted = "p" * 43
    with httpx.Client(base_url=server.url, cookies={COOKIE: cookies[COOKIE], "cargobay_ui_csrf": planted},
                      follow_redirects=False, timeout=30) as forger:
        r = forger.post("/ui/r/team-a/app:v1/delete", data={"csrf": planted})
        assert r.status_code == 403, (r.status_code, r.text[:300])
    assert_still_tagged(server, "team-a/app", digests["team-a/app"])


def test_an_expired_session_sends_back_to_the_login(anonymous: Browser, tmp_path_factory: pytest.TempPathFactory,
                                                    server: RunningServer) -> None:
    browser = anonymous
    workdir = tmp_path_factory.mktemp("ui-auth-ttl")
    short = start_cargobay(workdir, config=ui_auth_config(workdir, session_ttl=2))
    browser.origin = short.url
    try:
        log_in(browser, "alice", USERS["alice"])
        assert browser.path() == "/ui/"

        def sent_to_login(_: Any) -> bool:
            browser.visit("/ui/")
            return browser.path() == "/ui/login"

        browser.wait_for(sent_to_login, "the expired session to send the browser to the login page")
        assert "expire" in browser.text('p#login-error[role="alert"]').lower()
        browser.screenshots("login-expired")
        log_in(browser, "alice", USERS["alice"], start="")  # back where it was
        assert browser.path() == "/ui/"
    finally:
        browser.origin = server.url
        short.stop()


def assert_still_tagged(server: RunningServer, repo: str, digest: str) -> None:
    token = get_token(server.url, "admin", f"repository:{repo}:pull")
    r = httpx.head(f"{server.url}/v2/{repo}/manifests/v1", headers={**bearer(token), "Accept": OCI_MANIFEST})
    assert (r.status_code, r.headers.get("Docker-Content-Digest")) == (200, digest)

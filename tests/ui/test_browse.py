"""The web console without auth, in a real browser: the repositories list (search, pages), a
repository's tags (1,000 of them, in pages), an index with its platforms and attestation, a manifest
with its layers, config and referrers, the operations page, and deleting a tag (a forged form
deletes nothing). What each page shows is compared with what skopeo reads from the same registry.
Every page is checked for console errors and foreign requests and photographed at 375 and 1920 px."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e.clients import CommandFailed, Skopeo
from tests.support.browser import Browser
from tests.support.images import OCI_INDEX, Image, push_image, simple_image
from tests.support.servers import RunningServer, serving, start_cargobay, start_distribution

from . import content
from .content import SBOM_TYPE, SIGNATURE_TYPE

TAG_COUNT = 1000
BULK = [f"bulk/item-{i:03d}" for i in range(60)]
PAGE_SIZE = 50  # ui.page_size's default: the lists below are longer, so they come in pages
TOOLS = ("docker", "podman", "nerdctl", "ctr", "puller")
UPSTREAM_HOST = "mirror.example"  # a pull-through upstream's name; its url is a loopback Distribution
CACHED = f"{UPSTREAM_HOST}/library/base"
QUOTA_GLOB = "bulk/*"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serving(start_distribution(tmp_path_factory.mktemp("ui-upstream")))


@pytest.fixture(scope="module")
def server(upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("ui-browse")
    config = {"storage": {"filesystem": {"root": str(workdir / "data")}, "delete": {"enabled": True}},
              "proxy": {"upstreams": [{"host": UPSTREAM_HOST, "url": upstream.url}]},
              "policy": {"quotas": [{"repositories": QUOTA_GLOB, "limit": "1GB"}]}}
    yield from serving(start_cargobay(workdir, config=config))


@dataclass(frozen=True)
class Content:
    multi: content.MultiPlatform  # multi/app:v1
    signed: Image  # signed/app:v1, with a signature and an SBOM referring to it
    signature: Image
    sbom: Image
    many: Image  # many/tags: t0000..t0999
    doomed: Image  # deleteme/app:v1 and :v2
    untagged: Image  # in deleteme/app by digest only
    repositories: frozenset[str]


@pytest.fixture(scope="module")
def pushed(server: RunningServer, upstream: RunningServer, skopeo: Skopeo,
           tmp_path_factory: pytest.TempPathFactory) -> Content:
    """Everything the pages show: skopeo pushes each image once, plain HTTP adds the bulk."""
    layouts = tmp_path_factory.mktemp("ui-layouts")
    multi = content.multi_platform("ui-multi")
    signed = content.configured_image("ui-signed")
    many = simple_image("ui-many", layer_count=1)
    doomed = simple_image("ui-doomed", layer_count=1)
    untagged = simple_image("ui-untagged", layer_count=1)
    for target, reference in ((multi.index, "multi/app:v1"), (signed, "signed/app:v1"), (many, "many/tags:t0000"),
                              (doomed, "deleteme/app:v1")):
        content.skopeo_push(skopeo, server, target, reference, layouts)
    signature = content.artifact(signed, SIGNATURE_TYPE, b'{"critical":{"identity":{}}}',
                                 "application/vnd.dev.cosign.simplesigning.v1+json")
    sbom = content.artifact(signed, SBOM_TYPE, b'{"spdxVersion":"SPDX-2.3"}', SBOM_TYPE)
    with httpx.Client(timeout=60) as client:
        for referrer in (signature, sbom):
            content.put_referrer(client, server, "signed/app", referrer)
        content.put_tags(client, server, "many/tags", many, [f"t{i:04d}" for i in range(1, TAG_COUNT)])
        content.put_tags(client, server, "deleteme/app", doomed, ["v2"])
        push_image(client, server.url, "deleteme/app", untagged)  # by digest only
        content.mount_copies(client, server, "many/tags", many, BULK)
        push_image(client, upstream.url, "library/base", many, "v1")
    skopeo.inspect_raw(content.docker_ref(server, f"{CACHED}:v1"))  # pulled through: now a cached repository
    assert len(skopeo.list_tags(content.docker_ref(server, "many/tags"))) == TAG_COUNT
    return Content(multi, signed, signature, sbom, many, doomed, untagged,
                   frozenset({"multi/app", "signed/app", "many/tags", "deleteme/app", CACHED, *BULK}))


def walk(browser: Browser, start: str, row_css: str, *attrs: str) -> tuple[list[dict[str, str]], int]:
    """Every row from `start` on, following rel=next; the rows and the number of pages."""
    rows: list[dict[str, str]] = []
    url: str | None = start
    pages = 0
    while url:
        browser.visit(url)
        pages += 1
        page = browser.attrs(row_css, *attrs)
        assert len(page) <= PAGE_SIZE, f"{browser.path()} shows {len(page)} rows, more than a page"
        rows += page
        following = browser.all('a[rel="next"]')
        assert len(following) <= 1
        url = following[0].get_attribute("href") if following else None
        assert pages <= 2 * TAG_COUNT // PAGE_SIZE, "rel=next does not end"
    return rows, pages


# -- repositories --------------------------------------------------------------------------------------
def test_the_repository_list_searches_and_pages(browser: Browser, server: RunningServer, pushed: Content,
                                                skopeo: Skopeo) -> None:
    browser.visit("/ui/")
    browser.screenshots("repositories")
    rows, pages = walk(browser, "/ui/", "#repositories tr[data-repository]", "data-repository", "data-kind",
                       "data-tags", "data-size")
    names = [row["data-repository"] for row in rows]
    assert len(names) == len(set(names)), f"a repository shows on two pages: {names}"
    assert set(names) == pushed.repositories
    assert pages == -(-len(pushed.repositories) // PAGE_SIZE)
    by_name = {row["data-repository"]: row for row in rows}
    assert {name: row["data-kind"] for name, row in by_name.items() if row["data-kind"] != "local"} == {
        CACHED: "cache"}
    assert by_name["many/tags"]["data-tags"] == str(TAG_COUNT)
    assert by_name["deleteme/app"]["data-tags"] == "2"
    _, bulk_manifest = content.manifest(skopeo, server, f"{BULK[0]}:v1")
    for name in BULK:
        assert (by_name[name]["data-tags"], by_name[name]["data-size"]) == ("1", str(content.image_size(bulk_manifest)))

    # search by typing into the search field and pressing Enter
    browser.visit("/ui/")
    field = browser.one('form[role="search"]#search-form input#search[name="q"]')
    field.send_keys("item-04")
    browser.settle(lambda: field.send_keys(Keys.ENTER))
    assert browser.query()["q"] == ["item-04"]
    found = [row["data-repository"] for row in browser.attrs("#repositories tr[data-repository]", "data-repository")]
    assert sorted(found) == [f"bulk/item-{i:03d}" for i in range(40, 50)]
    browser.screenshots("repositories-search")
    browser.visit("/ui/?q=no-such-repository")
    assert not browser.all("#repositories tr[data-repository]")
    browser.one("p#empty")

    # the name links to the repository page
    browser.visit("/ui/?q=multi")
    link = browser.one('#repositories tr[data-repository="multi/app"] a')
    browser.settle(link.click)
    assert browser.path() == "/ui/r/multi/app"


# -- a repository ----------------------------------------------------------------------------------------
def test_tags_show_what_skopeo_sees_and_a_thousand_come_in_pages(browser: Browser, server: RunningServer,
                                                                  pushed: Content, skopeo: Skopeo) -> None:
    for repo, expected_platforms in (("multi/app", "linux/amd64 linux/arm64"), ("signed/app", "linux/amd64")):
        browser.visit(f"/ui/r/{repo}")
        digest, body = content.manifest(skopeo, server, f"{repo}:v1")
        inspected = skopeo.inspect(content.docker_ref(server, f"{repo}:v1"))
        assert inspected["Digest"] == digest
        row = browser.one('#tags tr[data-tag="v1"]')
        assert row.get_attribute("data-digest") == digest
        assert row.get_attribute("data-media-type") == body["mediaType"]
        assert row.get_attribute("data-size") == str(content.expected_size(skopeo, server, repo, body))
        assert row.get_attribute("data-platforms") == expected_platforms
        datetime.fromisoformat(row.get_attribute("data-pushed") or "")
        commands = {pre.get_attribute("data-tool"): pre for pre in browser.all("pre.pull-command")}
        assert set(commands) == set(TOOLS)
        for tool, pre in commands.items():
            copy = pre.find_element(By.XPATH, "..//button[@type='button' and contains(@class, 'copy')]")
            assert copy.get_attribute("data-copy") == pre.text.strip(), tool
            assert f"{server.hostport}/{repo}" in pre.text, (tool, pre.text)
    # a copy button puts its command on the clipboard
    browser.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    copy.click()
    browser.wait_for(lambda _: copy.text == "Copied", "the copy button to say it copied")
    clipboard = browser.driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('failed: ' + e))")
    assert clipboard == copy.get_attribute("data-copy")
    assert browser.one('#tags tr[data-tag="v1"]').find_element(By.TAG_NAME, "a").get_attribute("href") == (
        f"{server.url}/ui/r/signed/app:v1")
    browser.screenshots("repository")

    # 1,000 tags of one manifest, by name: every tag once, in order, each with the digest and size skopeo sees
    digest, body = content.manifest(skopeo, server, "many/tags:t0500")
    browser.visit("/ui/r/many/tags")
    pushed_at = [datetime.fromisoformat(row["data-pushed"])
                 for row in browser.attrs("#tags tr[data-tag]", "data-pushed")]
    assert len(pushed_at) == PAGE_SIZE and pushed_at == sorted(pushed_at, reverse=True), "not newest first"
    browser.screenshots("repository-1000-tags")
    rows, pages = walk(browser, "/ui/r/many/tags?sort=name", "#tags tr[data-tag]", "data-tag", "data-digest",
                       "data-size")
    tags = [row["data-tag"] for row in rows]
    assert tags == [f"t{i:04d}" for i in range(TAG_COUNT)]
    assert pages == TAG_COUNT // PAGE_SIZE
    assert {(row["data-digest"], row["data-size"]) for row in rows} == {(digest, str(content.image_size(body)))}


# -- an image --------------------------------------------------------------------------------------------
def test_an_index_lists_its_platforms_and_its_attestation(browser: Browser, server: RunningServer,
                                                          pushed: Content, skopeo: Skopeo) -> None:
    multi = pushed.multi
    digest, body = content.manifest(skopeo, server, "multi/app:v1")
    assert body["mediaType"] == OCI_INDEX and digest == multi.index.digest
    browser.visit("/ui/r/multi/app:v1")
    platforms = browser.attrs("#platforms tr[data-platform]", "data-platform", "data-digest")
    assert sorted((p["data-platform"], p["data-digest"]) for p in platforms) == [
        ("linux/amd64", multi.amd64.digest), ("linux/arm64", multi.arm64.digest)]
    attestations = browser.attrs("#attestations tr[data-digest]", "data-digest", "data-for")
    assert attestations == [{"data-digest": multi.attestation.digest, "data-for": multi.amd64.digest}]
    assert json.loads(browser.text("pre#raw-manifest")) == body
    browser.screenshots("image-index")
    browser.visit(f"/ui/r/multi/app@{digest}")  # the same page by digest
    assert len(browser.all("#platforms tr[data-platform]")) == 2

    link = browser.one('#platforms tr[data-platform="linux/arm64"] a')
    browser.settle(link.click)
    assert browser.path() == f"/ui/r/multi/app@{multi.arm64.digest}"
    _, arm64 = content.manifest(skopeo, server, f"multi/app@{multi.arm64.digest}")
    assert browser.attrs("#layers tr[data-digest]", "data-digest", "data-media-type", "data-size") == [
        {"data-digest": layer["digest"], "data-media-type": layer["mediaType"], "data-size": str(layer["size"])}
        for layer in arm64["layers"]]
    assert browser.text('#config dd[data-field="platform"]').strip() == "linux/arm64"

    browser.visit(f"/ui/r/multi/app@{multi.attestation.digest}")  # the attestation itself: a page, no error
    browser.one("pre#raw-manifest")


def test_a_manifest_shows_layers_config_and_referrers(browser: Browser, server: RunningServer, pushed: Content,
                                                      skopeo: Skopeo) -> None:
    digest, body = content.manifest(skopeo, server, "signed/app:v1")
    config = json.loads(skopeo("inspect", "--tls-verify=false", "--config", "--raw",
                               content.docker_ref(server, "signed/app:v1")).stdout)
    browser.visit("/ui/r/signed/app:v1")
    assert browser.attrs("#layers tr[data-digest]", "data-digest", "data-media-type", "data-size") == [
        {"data-digest": layer["digest"], "data-media-type": layer["mediaType"], "data-size": str(layer["size"])}
        for layer in body["layers"]]
    shown = {dd.get_attribute("data-field"): dd.get_attribute("textContent") or ""
             for dd in browser.all("#config dd[data-field]")}
    wanted: dict[str, Any] = content.APP_CONFIG
    for field, words in (("entrypoint", wanted["Entrypoint"]), ("cmd", wanted["Cmd"]), ("env", wanted["Env"]),
                         ("labels", [w for kv in wanted["Labels"].items() for w in kv]),
                         ("exposed-ports", ["8080/tcp"]), ("user", ["1000:1000"]), ("workdir", ["/srv/app"]),
                         ("platform", ["linux/amd64"])):
        for word in words:
            assert word in shown.get(field, ""), f"config field {field} shows {shown.get(field)!r}, lacks {word!r}"
    assert config["created"][:10] in shown.get("created", "")
    assert len(browser.all("ol#history > li")) == len(config["history"])
    assert json.loads(browser.text("pre#raw-manifest")) == body
    assert json.loads(browser.text("pre#raw-config")) == config
    assert digest == pushed.signed.digest

    groups = {group.get_attribute("data-artifact-type"): [
        row.get_attribute("data-digest") for row in group.find_elements(By.CSS_SELECTOR, "tr[data-digest]")]
        for group in browser.all("section#referrers section.referrer-group")}
    assert groups == {SIGNATURE_TYPE: [pushed.signature.digest], SBOM_TYPE: [pushed.sbom.digest]}
    browser.screenshots("image-manifest")


# -- operations, not found ---------------------------------------------------------------------------------
def test_operations_and_not_found_pages(browser: Browser, pushed: Content) -> None:
    browser.visit("/ui/operations")
    assert [row["data-upstream"] for row in browser.attrs("#upstreams tr[data-upstream]", "data-upstream")] == [
        UPSTREAM_HOST]
    assert [row["data-prefix"] for row in browser.attrs("#quotas tr[data-prefix]", "data-prefix")] == [QUOTA_GLOB]
    browser.screenshots("operations")
    browser.visit("/ui/r/no/such-repository", status=404)
    browser.screenshots("not-found")
    browser.visit("/ui/no-such-page", status=404)  # the console's own page, not the API's JSON
    browser.visit("/ui/r/multi/app:no-such-tag", status=404)
    browser.visit(f"/ui/r/multi/app@{pushed.many.digest}", status=404)  # a manifest of another repository


# -- delete ----------------------------------------------------------------------------------------------
def test_deleting_a_tag_asks_first_and_a_forged_form_deletes_nothing(browser: Browser, server: RunningServer,
                                                                    pushed: Content, skopeo: Skopeo) -> None:
    ref = content.docker_ref
    browser.visit("/ui/r/deleteme/app")
    browser.settle(browser.one("a#untagged-link").click)
    assert browser.attrs("#untagged tr[data-digest]", "data-digest") == [{"data-digest": pushed.untagged.digest}]
    assert {a.get_attribute("href") for a in browser.all("a.delete")} == {
        f"{server.url}/ui/r/deleteme/app@{pushed.untagged.digest}/delete"}
    browser.screenshots("untagged")
    browser.visit("/ui/r/deleteme/app")
    deletes = {a.get_attribute("href") for a in browser.all("a.delete")}
    assert {f"{server.url}/ui/r/deleteme/app:v1/delete", f"{server.url}/ui/r/deleteme/app:v2/delete"} <= deletes

    link = browser.one('#tags tr[data-tag="v1"] a.delete')
    browser.settle(link.click)
    form = browser.one('form#confirm-delete[method="post"]')
    assert form.find_element(By.CSS_SELECTOR, 'input[type="hidden"][name="csrf"]').get_attribute("value")
    browser.screenshots("delete-confirm")
    assert skopeo.inspect_raw(ref(server, "deleteme/app:v1")) == pushed.doomed.manifest  # asking deletes nothing

    # a forged form: the browser's cookies, but no token (or a made-up one): refused, nothing deleted
    cookies = {c["name"]: c["value"] for c in browser.driver.get_cookies()}
    with httpx.Client(base_url=server.url, cookies=cookies, follow_redirects=False, timeout=30) as forger:
        for data in ({}, {"csrf": "forged-token"}):
            r = forger.post("/ui/r/deleteme/app:v2/delete", data=data)
            assert r.status_code == 403, (data, r.status_code, r.text[:300])
        # the page's real token, but sent by another site's page (a sibling subdomain, say)
        token = {"csrf": form.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")}
        for elsewhere in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-site"}):
            r = forger.post("/ui/r/deleteme/app:v2/delete", data=token, headers=elsewhere)
            assert r.status_code == 403, (elsewhere, r.status_code, r.text[:300])
    assert sorted(skopeo.list_tags(ref(server, "deleteme/app"))) == ["v1", "v2"]

    submit = form.find_element(By.CSS_SELECTOR, '[type="submit"]')
    browser.settle(submit.click)
    assert browser.path() == "/ui/r/deleteme/app"
    browser.one('p#flash[role="status"]')
    assert [row["data-tag"] for row in browser.attrs("#tags tr[data-tag]", "data-tag")] == ["v2"]
    browser.screenshots("delete-done")
    with pytest.raises(CommandFailed):
        skopeo.inspect_raw(ref(server, "deleteme/app:v1"))
    assert skopeo.list_tags(ref(server, "deleteme/app")) == ["v2"]
    assert skopeo.inspect_raw(ref(server, "deleteme/app:v2")) == pushed.doomed.manifest  # the other tag stays

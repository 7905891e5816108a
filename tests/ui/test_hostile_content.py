"""What a pusher can put in an image never breaks the console for anyone else: a config nested too
deep for any JSON parser, one whose fields hold nested values where strings belong, and an
attestation entry whose annotation is not a digest. Every page still answers with HTML (200), and the
server logs no traceback. Repository names ending in `/delete` stay browsable. Plain HTTP against a
real `registry serve`: nothing here needs a browser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    push_blob,
    push_image,
    push_manifest,
    simple_image,
)
from tests.support.servers import RunningServer, serving, start_cargobay

DEPTH = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir: Path = tmp_path_factory.mktemp("ui-hostile")
    yield from serving(start_cargobay(workdir, extra_args=["--delete"]))


def image_with_config(client: httpx.Client, server: RunningServer, repo: str, tag: str, config: bytes) -> str:
    """Push a one-layer image whose config blob is `config` verbatim; its manifest's digest."""
    layer = simple_image(f"hostile-{repo}-{tag}", layer_count=1).layers[0]
    blob = Blob.of(OCI_CONFIG, config)
    for each in (blob, layer):
        push_blob(client, server.url, repo, each)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blob.descriptor(),
                           "layers": [layer.descriptor()]}).encode()
    response = push_manifest(client, server.url, repo, tag, manifest, OCI_MANIFEST)
    return response.headers["Docker-Content-Digest"]


def test_hostile_configs_and_annotations_leave_every_page_working(server: RunningServer) -> None:
    deep = b'{"os":"linux","architecture":"amd64","config":{"Labels":' + b"[" * DEPTH + b"]" * DEPTH + b"}}"
    nested = "[" * 500 + "]" * 500
    odd = (f'{{"os":"linux","architecture":"amd64","config":{{"Env":[{nested},"A=1"],"Labels":{{"x":{nested}}},'
           f'"User":{nested}}},"history":[{{"created_by":{nested}}},"not a record"]}}').encode()
    with httpx.Client(timeout=60) as client:
        deep_digest = image_with_config(client, server, "evil/deep", "v1", deep)
        odd_digest = image_with_config(client, server, "evil/odd", "v1", odd)
        plain = simple_image("hostile-plain", layer_count=1)
        push_image(client, server.url, "evil/attest", plain)
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {**plain.descriptor(), "platform": {"os": "linux", "architecture": "amd64"}},
            {**plain.descriptor(), "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                             "vnd.docker.reference.digest": "javascript:alert(1)"}}]}).encode()
        push_manifest(client, server.url, "evil/attest", "v1", index, OCI_INDEX)
        push_image(client, server.url, "team/delete", simple_image("hostile-delete-name", layer_count=1), "v1")

        pages = ["/ui/", "/ui/r/evil/deep", "/ui/r/evil/deep:v1", f"/ui/r/evil/deep@{deep_digest}",
                 "/ui/r/evil/odd", "/ui/r/evil/odd:v1", f"/ui/r/evil/odd@{odd_digest}", "/ui/r/evil/attest:v1",
                 "/ui/r/team/delete", "/ui/r/team/delete:v1"]
        for path in pages:
            r = client.get(server.url + path)
            assert (r.status_code, r.headers["content-type"]) == (200, "text/html; charset=utf-8"), path
        odd_page = client.get(f"{server.url}/ui/r/evil/odd:v1").text
        assert "<code>A=1</code>" in odd_page  # the strings it has are shown; the nested values are not
        attest_page = client.get(f"{server.url}/ui/r/evil/attest:v1").text
        assert 'data-for=""' in attest_page  # an annotation that is no digest names nothing
        assert "@javascript" not in attest_page  # and makes no link (the raw JSON still shows it, escaped)
        confirm = client.get(f"{server.url}/ui/r/team/delete:v1/delete")
        assert confirm.status_code == 200 and 'id="confirm-delete"' in confirm.text
    assert "Traceback" not in server.log()

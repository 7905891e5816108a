import pytest

from ocispec.errors import ErrorCode, OCIValidationError
from ocispec.reference import parse_reference, validate_repository_name, validate_tag

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("text,expected", [
    ("redis:7", "docker.io/library/redis:7"),
    ("redis", "docker.io/library/redis:latest"),
    ("bitnami/redis", "docker.io/bitnami/redis:latest"),
    ("index.docker.io/library/redis:7", "docker.io/library/redis:7"),
    ("localhost/app:1", "localhost/app:1"),
    ("localhost:5000/team/app:1", "localhost:5000/team/app:1"),
    ("central.example:5000/redis", "central.example:5000/redis:latest"),
    (f"redis@{D}", f"docker.io/library/redis@{D}"),
    (f"redis:7@{D}", f"docker.io/library/redis:7@{D}"),
    ("[::1]:5000/a/b:c", "[::1]:5000/a/b:c"),
])
def test_docker_normalisation(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_digest_wins_over_tag() -> None:
    ref = parse_reference(f"redis:7@{D}")
    assert ref.identifier == D and ref.tag == "7"


def test_familiar_form() -> None:
    assert parse_reference("redis:7").familiar() == "redis:7"
    assert parse_reference("ghcr.io/a/b:1").familiar() == "ghcr.io/a/b:1"


@pytest.mark.parametrize("text", ["Redis", "redis:", "redis:-bad", "a//b", "/a", "a/../b", " redis", "redis@sha256:zz"])
def test_invalid_references(text: str) -> None:
    with pytest.raises(OCIValidationError):
        parse_reference(text)


@pytest.mark.parametrize("name", ["a", "a/b", "a-b/c_d/e.f", "a__b", "a" * 255, "a--b"])
def test_valid_repository_names(name: str) -> None:
    assert validate_repository_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "a/", "/a", "a//b", "..", "a/../b", "a/./b", "_a", "a" * 256, "a.-b",
                                  "a%2fb", "a\\b", "a b", "-a", "a/_uploads"])
def test_invalid_repository_names(name: str) -> None:
    with pytest.raises(OCIValidationError) as info:
        validate_repository_name(name)
    assert info.value.code is ErrorCode.NAME_INVALID


@pytest.mark.parametrize("tag,ok", [("latest", True), ("v1.2_3-x", True), ("_a", True), (".a", False), ("-a", False),
                                    ("a" * 128, True), ("a" * 129, False), ("a/b", False), ("", False)])
def test_tags(tag: str, ok: bool) -> None:
    if ok:
        assert validate_tag(tag) == tag
    else:
        with pytest.raises(OCIValidationError):
            validate_tag(tag)

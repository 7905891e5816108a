import hashlib
import io

import pytest

from ocispec.digest import Digest, DigestMismatch, SizeExceeded, VerifyingReader
from ocispec.errors import ErrorCode, OCIValidationError

HELLO256 = "sha256:" + hashlib.sha256(b"hello").hexdigest()
HELLO512 = "sha512:" + hashlib.sha512(b"hello").hexdigest()


def test_parse_round_trips_sha256_and_sha512() -> None:
    assert str(Digest.parse(HELLO256)) == HELLO256
    assert Digest.parse(HELLO512).algorithm == "sha512"
    assert Digest.of(b"hello", "sha512") == Digest.parse(HELLO512)


@pytest.mark.parametrize("text", [
    "", "sha256", "sha256:", "sha256:abc", "sha256:" + "A" * 64, "sha256:" + "g" * 64, "md5:" + "a" * 32,
    "sha512:" + "a" * 64, "sha256:../../etc/passwd", "SHA256:" + "a" * 64, "sha256:" + "a" * 65,
])
def test_invalid_digests_are_digest_invalid(text: str) -> None:
    with pytest.raises(OCIValidationError) as info:
        Digest.parse(text)
    assert info.value.code is ErrorCode.DIGEST_INVALID


def test_verifying_reader_accepts_matching_bytes() -> None:
    reader = VerifyingReader(io.BytesIO(b"hello"), Digest.parse(HELLO256), 5)
    assert reader.read(2) + reader.read(100) == b"hello"
    assert reader.read(10) == b"" and reader.verified


def test_verifying_reader_rejects_wrong_content() -> None:
    reader = VerifyingReader(io.BytesIO(b"hellO"), Digest.parse(HELLO256), 5)
    reader.read(10)
    with pytest.raises(DigestMismatch):
        reader.read(10)
    assert not reader.verified


def test_verifying_reader_stops_at_excess_bytes_without_reading_them_all() -> None:
    source = io.BytesIO(b"hello" + b"x" * 1_000_000)
    reader = VerifyingReader(source, Digest.parse(HELLO256), 5)
    with pytest.raises(SizeExceeded):
        while reader.read(1 << 20):
            pass
    assert source.tell() <= 6 + (1 << 20)


def test_verifying_reader_rejects_short_stream() -> None:
    reader = VerifyingReader(io.BytesIO(b"hell"), Digest.parse(HELLO256), 5)
    reader.read(10)
    with pytest.raises(DigestMismatch, match="4 bytes"):
        reader.read(10)

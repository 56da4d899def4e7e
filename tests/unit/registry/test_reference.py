"""References: the distribution grammar, with an explicit registry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.errors import UsageError
from donjon.registry.errors import ReferenceSyntaxError
from donjon.registry.oci import Digest
from donjon.registry.reference import MAX_NAME_BYTES, Reference

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("localhost:5000/hello:1.0", "localhost:5000", "hello", "1.0", None),
        ("localhost/hello:latest", "localhost", "hello", "latest", None),
        ("127.0.0.1:5000/apps/hello:v1", "127.0.0.1:5000", "apps/hello", "v1", None),
        ("[::1]:5000/a/b/c:x", "[::1]:5000", "a/b/c", "x", None),
        ("ghcr.io/org/app@sha256:" + HEX, "ghcr.io", "org/app", None, "sha256:" + HEX),
        ("ghcr.io/org/app:1@sha256:" + HEX, "ghcr.io", "org/app", "1", "sha256:" + HEX),
        ("r.example.com/a.b_c__d--e:T_a.g-1", "r.example.com", "a.b_c__d--e", "T_a.g-1", None),
    ],
)
def test_valid(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert str(ref) == text
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("hello:1.0", "does not start with a registry"),
        ("library/hello:1.0", "does not start with a registry"),
        ("localhost:5000/hello", "names no tag or digest"),
        ("localhost:5000/Hello:1", "repository"),
        ("localhost:5000/a//b:1", "repository"),
        ("localhost:5000/a-:1", "repository"),
        ("localhost:5000/a:.x", "tag"),
        ("localhost:5000/a:" + "x" * 129, "tag"),
        ("localhost:99999/a:1", "port"),
        ("localhost:x/a:1", "port"),
        ("bad_host.example/a:1", "registry host"),
        ("[::1/a:1", "closing"),
        ("[nothex]:5/a:1", "IPv6"),
        ("localhost:5000/a@sha256:abc", "64 lowercase hex"),
        ("localhost:5000/a@md5:" + "a" * 32, "sha256 and sha512"),
        (" localhost:5000/a:1", "spaces"),
        ("", "empty"),
        ("x.io/" + "a" * MAX_NAME_BYTES + ":1", "longer than"),
        ("x.io/a:1" + "b" * 2000, "limit"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(ReferenceSyntaxError, match=reason) as info:
        Reference.parse(text)
    assert isinstance(info.value, UsageError)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost:5000", True),
        ("LOCALHOST", True),
        ("127.0.0.1:5000", True),
        ("127.8.9.10", True),
        ("[::1]:5000", True),
        ("10.0.0.1:5000", False),
        ("[2001:db8::1]:443", False),
        ("ghcr.io", False),
    ],
)
def test_loopback(registry: str, loopback: bool) -> None:
    assert Reference.parse(f"{registry}/a:1").is_loopback is loopback


def test_digest_wins_and_tags_are_labels() -> None:
    digest = Digest.of(b"x")
    ref = Reference.parse("localhost:5000/a:1").with_digest(digest)
    assert ref.manifest_reference == str(digest)
    assert ref.name == "localhost:5000/a"
    moved = ref.with_tag("2")
    assert moved.digest is None and moved.manifest_reference == "2"
    with pytest.raises(ReferenceSyntaxError):
        ref.with_tag("-bad")


@given(st.text(max_size=300))
def test_parse_never_crashes(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except ReferenceSyntaxError:
        return
    assert Reference.parse(str(ref)) == ref

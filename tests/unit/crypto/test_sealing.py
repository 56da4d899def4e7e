"""Secrets sealed to a Keep's P-384 key (HPKE): they open with that key, that name and that
nonce only; anything else is a ``SealError`` that returns nothing and never quotes the value."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donjon.crypto.ca import KeyPair
from donjon.crypto.sealing import (
    MAX_SEALED_BYTES,
    SEAL_OVERHEAD,
    SealError,
    open_secret,
    seal_secret,
)
from donjon.errors import DecodeError, VerificationError

VALUE = b"S3CRET-correct-horse-battery-staple"
NAME = "db-password"
NONCE = bytes(range(32))

# Generated once: each P-384 key costs a few hundred microseconds, and no test mutates one.
KEEP = KeyPair.generate("P-384")
OTHER = KeyPair.generate("P-384")
KEEP_PEM = KEEP.private_key_pem()


def _sealed(value: bytes = VALUE) -> bytes:
    return seal_secret(value, KEEP.spki_der, name=NAME, nonce=NONCE)


def _refused(
    sealed: bytes, key_pem: bytes = KEEP_PEM, *, name: str = NAME, nonce: bytes = NONCE
) -> SealError:
    """The SealError raised opening *sealed*; fails the test if anything is returned."""
    with pytest.raises(SealError) as info:
        opened = open_secret(sealed, key_pem, name=name, nonce=nonce)
        pytest.fail(f"opened to {len(opened)} bytes")
    assert VALUE.decode() not in str(info.value)
    assert VALUE.decode() not in info.value.diagnostics()
    return info.value


# -- what opens ----------------------------------------------------------------------------------


def test_round_trip() -> None:
    assert open_secret(_sealed(), KEEP_PEM, name=NAME, nonce=NONCE) == VALUE


def test_the_sealed_length_is_the_value_plus_the_overhead() -> None:
    # 97 bytes of uncompressed P-384 point (SEC 1 §2.3.3: 1 + 2 * 48) and a 16-byte GCM tag.
    assert SEAL_OVERHEAD == 97 + 16
    for size in (0, 1, 31, 1000, 64 * 1024):
        assert len(_sealed(b"\xa5" * size)) == size + SEAL_OVERHEAD


def test_two_seals_of_one_value_differ() -> None:
    first, second = _sealed(), _sealed()
    # A fresh ephemeral key per seal: the encapsulated keys differ, and so does everything after.
    assert first[:97] != second[:97]
    assert first[97:] != second[97:]
    assert open_secret(first, KEEP_PEM, name=NAME, nonce=NONCE) == VALUE
    assert open_secret(second, KEEP_PEM, name=NAME, nonce=NONCE) == VALUE


def test_the_value_is_not_in_the_sealed_bytes() -> None:
    assert VALUE not in _sealed()


# -- what does not open --------------------------------------------------------------------------


def test_another_key_does_not_open_it() -> None:
    error = _refused(_sealed(), OTHER.private_key_pem())
    assert isinstance(error, VerificationError)
    assert "does not open with this Keep's key" in str(error)
    assert repr(NAME) in str(error)


def test_another_name_does_not_open_it() -> None:
    _refused(_sealed(), name="api-token")
    # Length-prefixed in the HPKE info: a name cannot borrow bytes from the nonce.
    _refused(_sealed(), name=NAME + "\x00", nonce=NONCE[1:])


def test_another_nonce_does_not_open_it() -> None:
    _refused(_sealed(), nonce=NONCE[:-1] + bytes([NONCE[-1] ^ 1]))
    _refused(_sealed(), nonce=NONCE + b"\x00")
    _refused(_sealed(), nonce=b"")


def test_one_flipped_byte_anywhere_does_not_open() -> None:
    sealed = _sealed()
    for i in range(len(sealed)):
        for bit in (0x01, 0x80):
            altered = bytearray(sealed)
            altered[i] ^= bit
            _refused(bytes(altered))


@pytest.mark.parametrize("keep", [0, 1, 96, 97, SEAL_OVERHEAD - 1, SEAL_OVERHEAD, -1])
def test_truncated_does_not_open(keep: int) -> None:
    sealed = _sealed()
    _refused(sealed[:keep])


def test_empty_does_not_open() -> None:
    _refused(b"")


def test_appended_bytes_do_not_open() -> None:
    _refused(_sealed() + b"\x00")


# -- what is refused before any decryption -------------------------------------------------------


def test_an_oversized_sealed_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=rf"over {MAX_SEALED_BYTES} bytes") as info:
        open_secret(b"\x00" * (MAX_SEALED_BYTES + 1), KEEP_PEM, name=NAME, nonce=NONCE)
    assert not isinstance(info.value, SealError)
    # The limit admits the largest secret Steward stores.
    value = b"\x5a" * (MAX_SEALED_BYTES - SEAL_OVERHEAD)
    largest = _sealed(value)
    assert len(largest) == MAX_SEALED_BYTES
    assert open_secret(largest, KEEP_PEM, name=NAME, nonce=NONCE) == value


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        (KeyPair.generate("P-256").spki_der, "P-384 keys only"),
        (KeyPair.generate("P-521").spki_der, "P-384 keys only"),
        (b"garbage", "cannot be loaded"),
        (b"", "cannot be loaded"),
        (KEEP.spki_der[:-1], "cannot be loaded"),
    ],
    ids=["p256", "p521", "garbage", "empty", "truncated-p384"],
)
def test_a_recipient_that_is_not_a_p384_key_is_a_decode_error(
    recipient: bytes, message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        seal_secret(VALUE, recipient, name=NAME, nonce=NONCE)


@pytest.mark.parametrize(
    ("key_pem", "message"),
    [
        (KeyPair.generate("P-256").private_key_pem(), "P-384 keys only"),
        (b"garbage", "cannot be loaded"),
        (KEEP.spki_der, "cannot be loaded"),
    ],
    ids=["p256", "garbage", "der-public-key"],
)
def test_opening_with_a_key_that_is_not_p384_is_a_decode_error(
    key_pem: bytes, message: str
) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        open_secret(_sealed(), key_pem, name=NAME, nonce=NONCE)
    assert not isinstance(info.value, SealError)


def test_a_name_or_nonce_over_64_kib_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="too long"):
        seal_secret(VALUE, KEEP.spki_der, name="a" * 0x10000, nonce=NONCE)
    with pytest.raises(DecodeError, match="too long"):
        seal_secret(VALUE, KEEP.spki_der, name=NAME, nonce=b"\x00" * 0x10000)


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.binary(min_size=0, max_size=4096),
    name=st.text(max_size=80),
    nonce=st.binary(max_size=64),
)
def test_any_value_and_name_round_trip(value: bytes, name: str, nonce: bytes) -> None:
    sealed = seal_secret(value, KEEP.spki_der, name=name, nonce=nonce)
    assert len(sealed) == len(value) + SEAL_OVERHEAD
    assert open_secret(sealed, KEEP_PEM, name=name, nonce=nonce) == value
    with pytest.raises(SealError) as info:
        open_secret(sealed, KEEP_PEM, name=name + "x", nonce=nonce)
    if len(value) >= 8:  # shorter values may occur in any text by chance
        assert repr(value)[2:-1] not in str(info.value)

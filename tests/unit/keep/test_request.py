"""The keep request: what the keep loader hands the keep process, as hostile input."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest

from donjon.errors import ConfigError, DecodeError
from donjon.keep.config import parse_config
from donjon.keep.request import MAX_REQUEST_BYTES, KeepRequest


def _valid() -> dict[str, object]:
    return {
        "v": 1,
        "module": "/w/hello.wasm",
        "program": "hello.wasm",
        "args": ["a", ""],
        "config": {"version": 1, "args": [], "env": [], "dirs": [], "limits": {}},
        "cache_dir": None,
        "progress": False,
        "log_level": 30,
    }


def test_round_trip_with_a_full_config(tmp_path: Path) -> None:
    config = parse_config(
        'args = ["x"]\n[env]\nA = "1"\n[limits]\nmemory_mib = 64\ntimeout_s = 2.0\n'
        '[[files]]\nkind = "null"\n[[dirs]]\nhost = "/d"\nguest = "/data"\n',
        source="Enarx.toml",
    )
    request = KeepRequest(
        module=tmp_path / "m.wasm",
        program="m.wasm",
        args=("--", "é"),
        config=config,
        cache_dir=tmp_path / "cache",
        progress=True,
        log_level=10,
    )
    data = request.encode()
    assert KeepRequest.decode(data) == request
    assert KeepRequest.decode(data).encode() == data  # deterministic CBOR


def test_the_valid_form_decodes() -> None:
    request = KeepRequest.decode(cbor2.dumps(_valid()))
    assert request.module == Path("/w/hello.wasm")
    assert request.args == ("a", "")
    assert request.cache_dir is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "version 2 is not 1"),
        ({"extra": 1}, "unknown fields ['extra']"),
        ({"module": ""}, "module must be a string"),
        ({"module": 7}, "module must be a string"),
        ({"program": "a\0b"}, "program has a NUL"),
        ({"args": "a"}, "args must be a list"),
        ({"args": [1]}, "args must be a string"),
        ({"args": ["x"] * 1025}, "at most 1024"),
        ({"config": []}, "config must be a map"),
        ({"cache_dir": 5}, "cache_dir must be a string"),
        ({"progress": 1}, "progress must be a boolean"),
        ({"log_level": 99}, "log_level must be an integer 0..50"),
        ({"log_level": True}, "log_level must be an integer 0..50"),
    ],
)
def test_malformed_requests_are_refused(change: dict[str, object], message: str) -> None:
    raw = _valid() | change
    with pytest.raises(DecodeError) as info:
        KeepRequest.decode(cbor2.dumps(raw))
    assert message in str(info.value)


def test_not_cbor_not_a_map_and_too_large() -> None:
    with pytest.raises(DecodeError, match="not valid CBOR"):
        KeepRequest.decode(b"\x1c")  # a reserved additional-information value
    with pytest.raises(DecodeError, match="must be a CBOR map"):
        KeepRequest.decode(cbor2.dumps([1, 2]))
    with pytest.raises(DecodeError, match="limit"):
        KeepRequest.decode(b"\0" * (MAX_REQUEST_BYTES + 1))


def test_an_invalid_embedded_config_is_a_config_error() -> None:
    raw = _valid() | {"config": {"version": 1, "limits": {"memory_mib": 0}}}
    with pytest.raises(ConfigError, match="memory_mib"):
        KeepRequest.decode(cbor2.dumps(raw))

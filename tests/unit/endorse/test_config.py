"""Fetch settings: URLs are checked, secrets stay out of reprs, the cache dir follows XDG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import donjon.endorse
from donjon.endorse.config import (
    DEFAULT_PCS_URL,
    INTEL_ROOT_CA_CRL_URL,
    FetchConfig,
    Timeouts,
    default_cache_dir,
    service_url,
)
from donjon.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://kdsintf.amd.com", "https://kdsintf.amd.com"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        (" https://cache.example/amd/ ", "https://cache.example/amd"),
    ],
)
def test_service_urls(url: str, expected: str) -> None:
    assert service_url(url, option="--kds-url") == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://kds.example", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("kdsintf.amd.com", "http:// or https://"),
        ("https://", "no host"),
        ("https://user:secret@kds.example", "credentials"),
        ("https://kds.example?x=1", "without ?query"),
        ("https://kds.example#frag", "without ?query"),
        ("https://kds.example:99999", "not a URL"),
        ("https://kds.example/" + "a" * 3000, "characters"),
    ],
)
def test_bad_service_urls_name_the_option(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="--pcs-url") as info:
        FetchConfig(pcs_url=url)
    assert problem in info.value.message


def test_root_crl_url_intel_or_pccs() -> None:
    assert FetchConfig().root_crl_url == INTEL_ROOT_CA_CRL_URL
    assert FetchConfig(pcs_url=DEFAULT_PCS_URL + "/").root_crl_url == INTEL_ROOT_CA_CRL_URL
    pccs = FetchConfig(pcs_url="https://pccs.internal:8081")
    assert pccs.root_crl_url == "https://pccs.internal:8081/sgx/certification/v4/rootcacrl"
    own = FetchConfig(intel_root_crl_url="http://mirror.internal/IntelSGXRootCA.der")
    assert own.root_crl_url == "http://mirror.internal/IntelSGXRootCA.der"
    with pytest.raises(ConfigError, match="root CRL"):
        FetchConfig(intel_root_crl_url="https://u:p@mirror.internal/x.der")


def test_the_api_key_is_never_shown() -> None:
    config = FetchConfig(pcs_api_key="s3cr3t-key")
    assert "s3cr3t" not in repr(config)
    assert config == FetchConfig()  # nor does it make two configurations differ
    with pytest.raises(ConfigError, match="line break"):
        FetchConfig(pcs_api_key="a\r\nInjected: header")


def test_timeouts_must_be_positive() -> None:
    assert Timeouts().total == 15.0 and Timeouts().connect == 5.0
    with pytest.raises(ConfigError, match="total"):
        Timeouts(total=0)
    with pytest.raises(ConfigError, match="max_retry_after"):
        Timeouts(max_retry_after=-1)


def test_default_cache_dir_follows_xdg() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/var/cache/x", "HOME": "/home/u"}) == Path(
        "/var/cache/x/donjon/endorsements"
    )
    # A relative XDG_CACHE_HOME is invalid (XDG spec) and ignored.
    assert default_cache_dir({"XDG_CACHE_HOME": "rel", "HOME": "/home/u"}) == Path(
        "/home/u/.cache/donjon/endorsements"
    )
    assert default_cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/donjon/endorsements")


def test_public_api_resolves() -> None:
    names = donjon.endorse.__all__
    assert names == sorted(set(names))
    for name in names:
        assert not name.startswith("_") and getattr(donjon.endorse, name) is not None
    with pytest.raises(AttributeError):
        donjon.endorse.no_such_thing  # noqa: B018


def test_planning_and_settings_do_not_import_the_http_stack() -> None:
    code = (
        "import sys, donjon.endorse.plan, donjon.endorse.fetcher, donjon.steward.config, "
        "donjon.cli._evidenceopts; print('httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

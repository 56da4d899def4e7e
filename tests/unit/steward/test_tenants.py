"""Tenants: finding them on disk, and routing /t/<name>/... to each one's own Steward app."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from donjon.crypto.ca import CertificateAuthority
from donjon.errors import ConfigError
from donjon.steward.app import StewardApp
from donjon.steward.config import StewardPolicy
from donjon.steward.core import StewardCore
from donjon.steward.messages import ErrorBody
from donjon.steward.tenants import TenantRouter, find_tenants
from tests.unit.steward._support import PinnedClock


def _app(name: str) -> StewardApp:
    ca = CertificateAuthority.create(
        now=datetime(2025, 1, 1, tzinfo=UTC), lifetime=timedelta(days=3650), common_name=name
    )
    return StewardApp(StewardCore(ca, StewardPolicy.dev(), clock=PinnedClock()))


def _get(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "headers": [], "query_string": b"", "root_path": ""}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_each_tenant_answers_with_its_own_ca() -> None:
    own, acme, beta = _app("own CA"), _app("acme CA"), _app("beta CA")
    router = TenantRouter(own, {"acme": acme, "beta": beta})
    for path, app in (("/v1/ca", own), ("/t/acme/v1/ca", acme), ("/t/beta/v1/ca", beta)):
        status, body = _get(router, path)
        assert (status, body) == (200, app.core.ca.certificate_pem)
    assert _get(router, "/t/acme/healthz") == (200, b"ok\n")


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/t/gamma/v1/ca", "gamma"), ("/t/../v1/ca", "(not a tenant name)"),
     ("/t/ACME/v1/ca", "(not a tenant name)"), ("/t//v1/ca", "(not a tenant name)")],
)  # fmt: skip
def test_an_unknown_tenant_is_a_404_naming_no_other(path: str, shown: str) -> None:
    router = TenantRouter(_app("own"), {"acme": _app("acme")})
    status, body = _get(router, path)
    assert status == 404
    error = ErrorBody.decode(body)
    assert error.reason == f"no tenant {shown} on this Steward"
    assert "acme" not in error.reason


def test_tenants_are_found_by_directory(tmp_path: Path) -> None:
    for name in ("acme", "beta-2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "policy.toml").write_text(f'name = "{name}"\n')
    (tmp_path / "Not_A_Tenant").mkdir()
    (tmp_path / "file").write_text("x")
    assert [t.name for t in find_tenants(tmp_path)] == ["acme", "beta-2"]
    (tmp_path / "gamma").mkdir()
    with pytest.raises(ConfigError, match=r"tenant gamma has no .*policy\.toml"):
        find_tenants(tmp_path)
    with pytest.raises(ConfigError, match="is not a directory"):
        find_tenants(tmp_path / "file")

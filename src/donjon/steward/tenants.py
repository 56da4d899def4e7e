"""Several tenants in one Steward, each as separate as a Steward of its own.

``donjon steward serve --tenants DIR`` serves, besides its own state directory and policy, one
tenant per subdirectory of ``DIR``: ``DIR/<name>/`` is that tenant's state directory (its own CA,
created on first start like any Steward's, its own ``secrets/``, and ``audit.jsonl`` with
``--audit-log``) and ``DIR/<name>/policy.toml`` its policy (attestation rules, accepted
workloads, secret release rules). A tenant's endpoints are Steward's own under ``/t/<name>``:
``/t/acme/v1/nonce``, ``/t/acme/v1/attest``, ``/t/acme/v1/secrets``, ``/t/acme/v1/ca``, so a Keep
or client is pointed at a tenant by its URL alone (``--steward https://steward/t/acme``).

Rule 1: nothing is shared between tenants but the process: each has its own CA key (so its
certificates and results are its own, and its nonces, which its CA key MACs, are worthless to
another), its own policy, secret store and audit log. A tenant's policy cannot release another
tenant's secrets, whatever it says: its store holds only its own.
Rule 2: a name is ``[a-z0-9][a-z0-9-]{0,62}``; anything else in ``DIR`` is ignored, and an
unknown tenant is a 404 that names no other tenant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from donjon.errors import ConfigError

__all__ = ["MAX_TENANTS", "POLICY_FILE", "TENANT_NAME", "Tenant", "TenantRouter", "find_tenants"]

TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""A tenant's name (matched in full): one URL path segment, one directory name."""
POLICY_FILE = "policy.toml"
MAX_TENANTS = 1000
"""Most tenants one Steward serves (each costs a CA key and a policy in every worker)."""
PREFIX = "/t/"


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant: its name, state directory and policy file."""

    name: str
    state_dir: Path

    @property
    def policy_file(self) -> Path:
        return self.state_dir / POLICY_FILE


def find_tenants(root: Path) -> list[Tenant]:
    """The tenants under *root*, by name.

    Raises:
        ConfigError: *root* is not a directory, a tenant has no policy file, or there are too
            many.
    """
    if not root.is_dir():
        raise ConfigError(
            f"--tenants {root} is not a directory; make one with a subdirectory per tenant"
        )
    tenants = sorted(
        (Tenant(p.name, p) for p in root.iterdir() if p.is_dir() and TENANT_NAME.fullmatch(p.name)),
        key=lambda t: t.name,
    )
    if len(tenants) > MAX_TENANTS:
        raise ConfigError(f"{root} has {len(tenants)} tenants; at most {MAX_TENANTS}")
    for tenant in tenants:
        if not tenant.policy_file.is_file():
            raise ConfigError(
                f"tenant {tenant.name} has no {tenant.policy_file}; write its Steward policy "
                "there (docs/attestation/policy.md): its name and its rules"
            )
    return tenants


class _App(Protocol):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    def close(self) -> None: ...

    def reload(self) -> None: ...


class TenantRouter:
    """An ASGI app: ``/t/<name>/...`` to that tenant's app (path stripped), the rest to *default*.

    Args:
        default: Steward's own app.
        tenants: each tenant's app, by name.
    """

    def __init__(self, default: _App, tenants: Mapping[str, _App]) -> None:
        self.default = default
        self.tenants = dict(tenants)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope.get("type") != "http" or not path.startswith(PREFIX):
            await self.default(scope, receive, send)
            return
        name, _, rest = path[len(PREFIX) :].partition("/")
        app = self.tenants.get(name)
        if app is None:
            await _not_found(send, name)
            return
        inner = dict(scope)
        inner["path"] = "/" + rest
        inner["raw_path"] = inner["path"].encode("latin-1", "replace")
        inner["root_path"] = scope.get("root_path", "") + PREFIX + name
        await app(inner, receive, send)

    def close(self) -> None:
        for app in (self.default, *self.tenants.values()):
            app.close()

    def reload(self) -> None:
        for app in (self.default, *self.tenants.values()):
            app.reload()


async def _not_found(send: Any, name: str) -> None:
    from donjon.steward.messages import ErrorBody

    shown = name[:64] if TENANT_NAME.fullmatch(name) else "(not a tenant name)"
    body = ErrorBody(error="NotFound", reason=f"no tenant {shown} on this Steward").encode()
    headers = [(b"content-type", b"application/cbor"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})

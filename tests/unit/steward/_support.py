"""Test support for Steward: a pinnable clock, a vector-only key binding, and request builders.

Everything here is test-only on purpose: production code has no pinnable clock option and no
binding but ``STRICT_BINDING``.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from donjon.attestation.result import VerifiedEvidence
from donjon.backends.nil_evidence import NilEvidenceProvider
from donjon.crypto.binding import report_data_for
from donjon.crypto.ca import CertificateAuthority, KeyPair
from donjon.errors import MeasurementError
from donjon.steward.config import StewardPolicy
from donjon.steward.core import BindingScheme, StewardCore
from donjon.steward.messages import AttestRequest

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
SNP_VECTOR = "sev-snp/milan-trustee"
"""A real Milan SEV-SNP report the production policy accepts (see PROVENANCE.md)."""
SNP_VERIFY_TIME = datetime(2025, 9, 1, tzinfo=UTC)


@dataclass
class PinnedClock:
    """A clock tests set and advance; production code never sees one."""

    t: datetime = field(default_factory=lambda: datetime(2026, 1, 1, 12, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.t

    def advance(self, **kwargs: float) -> None:
        self.t = self.t + timedelta(**kwargs)


@dataclass(frozen=True, slots=True)
class VectorBinding:
    """Test-only: accept report data equal to a recorded vector's (which binds none of our keys).

    Real vectors were captured elsewhere; their report data binds someone else's key. This
    binding still insists on the exact recorded value, so the evidence must be that vector.
    """

    report_data: bytes

    def check(
        self,
        evidence: VerifiedEvidence,
        *,
        spki_der: bytes,
        nonce: bytes | None,
        scheme: BindingScheme,
    ) -> None:
        if not hmac.compare_digest(evidence.report_data, self.report_data):
            raise MeasurementError("report data is not the recorded vector's")


@dataclass(frozen=True)
class SnpVector:
    report: bytes
    vcek: bytes
    report_data: bytes
    measurement: bytes


def snp_vector(name: str = SNP_VECTOR) -> SnpVector:
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    entry = next(v for v in manifest["vectors"] if v["dir"] == name)
    directory = VECTORS / name
    return SnpVector(
        report=(directory / entry["files"]["report"]).read_bytes(),
        vcek=(directory / entry["files"]["vcek"]).read_bytes(),
        report_data=bytes.fromhex(entry["expected"]["report_data"]),
        measurement=bytes.fromhex(entry["expected"]["measurement"]),
    )


class Keep:
    """A pretend Keep: a key pair and the nil evidence provider, building attest requests."""

    def __init__(self, key_dir: Path, *, curve: str = "P-384") -> None:
        self.key = KeyPair.generate(curve)
        self.provider = NilEvidenceProvider(key_path=key_dir / "nil-dev-key.pem", hostname="test")

    def csr(self, **kwargs: Any) -> bytes:
        return self.key.csr(**kwargs)

    def evidence(self, nonce: bytes, *, spki: bytes | None = None) -> bytes:
        return self.provider.evidence(report_data_for(spki or self.key.spki_der, nonce))

    def request(self, nonce: bytes, *, csr: bytes | None = None, **kwargs: Any) -> AttestRequest:
        return AttestRequest(
            csr=csr if csr is not None else self.csr(),
            platform="nil",
            evidence=self.evidence(nonce),
            nonce=nonce,
            **kwargs,
        )


_CA_CACHE: dict[str, CertificateAuthority] = {}
_CA_LOCK = threading.Lock()


def shared_ca() -> CertificateAuthority:
    """One CA per test session, valid around both the pinned clock and the SNP vector time."""
    with _CA_LOCK:
        if "ca" not in _CA_CACHE:
            _CA_CACHE["ca"] = CertificateAuthority.create(
                now=datetime(2024, 1, 1, tzinfo=UTC), lifetime=timedelta(days=5 * 365)
            )
        return _CA_CACHE["ca"]


def vector_core(vector: SnpVector, **kwargs: Any) -> StewardCore:
    """A production-policy Steward at the vectors' time that takes *vector*'s report data as
    the key binding (a recorded report cannot bind a key made now)."""
    return StewardCore(
        shared_ca(),
        StewardPolicy.production(),
        clock=PinnedClock(SNP_VERIFY_TIME),
        binding=VectorBinding(vector.report_data),
        **kwargs,
    )


@contextmanager
def running(
    core: StewardCore, *, http: str | None = None, loop: str | None = None, **app_options: Any
) -> Iterator[str]:
    """Serve *core* with real uvicorn on 127.0.0.1, port 0, in a thread; yield its URL.

    *http* and *loop* pick the stack (default: the fastest installed, as in production).
    """
    from donjon.steward.app import StewardApp, bind_socket, listening, uvicorn_server

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn_server(StewardApp(core, **app_options), http=http, loop=loop)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not server.started:
            if datetime.now(UTC) > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.01)
        yield listening(sock, tls=False).url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

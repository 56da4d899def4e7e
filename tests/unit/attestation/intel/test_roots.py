"""The embedded trust anchor, the verifier's construction, and the package's public API."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import donjon.attestation.intel as intel
from donjon.attestation import EvidenceVerifier, Platform
from donjon.attestation.intel import INTEL_SGX_ROOT_CA_SHA256, DcapVerifier, embedded_root
from donjon.errors import ConfigError
from tests.vectors_gen import intel_gen

from .conftest import VECTORS


def test_embedded_root_is_the_pinned_intel_root() -> None:
    root = embedded_root()
    der = root.public_bytes(Encoding.DER)
    assert hashlib.sha256(der).digest() == INTEL_SGX_ROOT_CA_SHA256
    assert der == (VECTORS / "sgx" / "roots" / "intel-sgx-root-ca.der").read_bytes()
    assert root.subject.rfc4514_string() == (
        "C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX Root CA"
    )
    provenance = (
        resources.files("donjon.attestation.intel").joinpath("roots/PROVENANCE.md").read_text()
    )
    assert INTEL_SGX_ROOT_CA_SHA256.hex() in provenance
    assert "Intel_SGX_Provisioning_Certification_RootCA.pem" in provenance


def test_constructor_checks() -> None:
    with pytest.raises(ConfigError, match="SGX or TDX"):
        DcapVerifier(platform=Platform.SEV_SNP, root=embedded_root())
    leaf = x509.load_pem_x509_certificates(
        (VECTORS / "sgx" / "roots" / "intel-tcb-signing-2018.pem").read_bytes()
    )[0]
    with pytest.raises(ConfigError, match="self-signed"):
        DcapVerifier(platform=Platform.SGX, root=leaf)
    verifier: EvidenceVerifier = DcapVerifier.from_embedded_roots(platform=Platform.TDX)
    assert verifier.platform is Platform.TDX
    other = DcapVerifier(platform=Platform.SGX, root=intel_gen.generator_root())
    assert other.platform is Platform.SGX


def test_public_api_is_explicit() -> None:
    assert sorted(intel.__all__) == sorted(
        name for name in vars(intel) if not name.startswith("_") and name not in _MODULES
    )
    for name in intel.__all__:
        assert getattr(intel, name) is not None


_MODULES = {"annotations", "collateral", "pck", "quote", "tcb", "verifier"}


def test_package_docstring_example_runs() -> None:
    """The example in ``donjon.attestation.intel``'s docstring, run against the real vectors."""
    doc = intel.__doc__ or ""
    code = doc.split("Example::", 1)[1]
    lines = [line[4:] for line in code.splitlines() if line.startswith("    ") or not line.strip()]
    source = "\n".join(lines).replace('"shared/vectors', f'"{VECTORS}').strip()
    namespace: dict[str, object] = {}
    exec(compile(source, "<intel docstring>", "exec"), namespace)  # noqa: S102 - our own docstring
    assert namespace["result"] is not None

"""One entry point for every evidence format: pick the platform's verifier and hold it to Rule 2.

Does: map a :class:`~donjon.attestation.result.Platform` (or its name) to its verifier, built
once per process with the embedded vendor roots and reused (verifiers are immutable, so this is
what lets the expensive parts, such as root certificates, be parsed once); run it with the
guarantees a relying party needs at a trust boundary:

- evidence larger than :data:`MAX_EVIDENCE_BYTES`, or a naive ``now``, is refused up front;
- whatever the verifier raises that is not a ``VerificationError`` (a bug: verifiers must only
  raise those) comes out as :class:`InternalVerifierError`, itself a ``VerificationError``, so a
  service never turns hostile bytes into a 500 and a CLI never prints a traceback;
- the result must be a ``VerifiedEvidence`` of the platform asked for.

Does not: apply a policy (``donjon.attestation.policy``), read files (``inputs``), or the clock.

Verifier modules are imported on first use, so ``verifier_for(Platform.NITRO)`` never pays for
the Intel verifier's imports, and a missing module is reported as such, not as an ``ImportError``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Final

from donjon.attestation.result import Endorsements, EvidenceVerifier, Platform, VerifiedEvidence
from donjon.errors import Error, EvidenceFormatError, UsageError, VerificationError

_logger = logging.getLogger(__name__)

# No TEE format comes near this: SNP reports are 1184 bytes, DCAP quotes ~5 KiB, CCA tokens and
# Nitro documents a few KiB. Refusing more up front bounds the work hostile input can cause.
MAX_EVIDENCE_BYTES: Final = 1024 * 1024


class UnsupportedPlatformError(UsageError):
    """A platform name donjon does not know, or whose verifier is not installed (exit code 2)."""


class InternalVerifierError(EvidenceFormatError):
    """A verifier failed in a way it must not (a bug); the evidence counts as not verified."""


def _snp() -> EvidenceVerifier:
    from donjon.attestation.snp import SnpVerifier

    verifier: EvidenceVerifier = SnpVerifier.from_embedded_roots()
    return verifier


def _tdx() -> EvidenceVerifier:
    from donjon.attestation.intel import DcapVerifier

    verifier: EvidenceVerifier = DcapVerifier.from_embedded_roots(platform=Platform.TDX)
    return verifier


def _sgx() -> EvidenceVerifier:
    from donjon.attestation.intel import DcapVerifier

    verifier: EvidenceVerifier = DcapVerifier.from_embedded_roots(platform=Platform.SGX)
    return verifier


def _cca() -> EvidenceVerifier:
    from donjon.attestation.cca import CcaVerifier

    verifier: EvidenceVerifier = CcaVerifier()
    return verifier


def _nitro() -> EvidenceVerifier:
    from donjon.attestation.nitro import NitroVerifier

    verifier: EvidenceVerifier = NitroVerifier.from_embedded_roots()
    return verifier


def _nil() -> EvidenceVerifier:
    from donjon.attestation.nil import NilVerifier

    verifier: EvidenceVerifier = NilVerifier(trusted_keys=None)
    return verifier


# platform -> (module that must import, factory)
_FACTORIES: Final[dict[Platform, tuple[str, Callable[[], EvidenceVerifier]]]] = {
    Platform.SEV_SNP: ("donjon.attestation.snp", _snp),
    Platform.TDX: ("donjon.attestation.intel", _tdx),
    Platform.SGX: ("donjon.attestation.intel", _sgx),
    Platform.CCA: ("donjon.attestation.cca", _cca),
    Platform.NITRO: ("donjon.attestation.nitro", _nitro),
    Platform.NIL: ("donjon.attestation.nil", _nil),
}

_lock = threading.Lock()
_verifiers: dict[Platform, EvidenceVerifier] = {}


def parse_platform(name: Platform | str) -> Platform:
    """A :class:`Platform` from its name (``"sev-snp"``, ``"tdx"``, ...).

    Raises:
        UnsupportedPlatformError: not a platform donjon knows.
    """
    if isinstance(name, Platform):
        return name
    try:
        return Platform(name.strip().lower())
    except ValueError:
        raise UnsupportedPlatformError(
            f"unknown platform {name!r}; expected one of {', '.join(map(str, Platform))}"
        ) from None


def verifier_for(platform: Platform | str) -> EvidenceVerifier:
    """The verifier for *platform*, built on first use and shared afterwards.

    ``nil`` gets ``NilVerifier(trusted_keys=None)``: any development key. A Steward that pins
    its development keys builds its own ``NilVerifier`` and calls :func:`verify_with`.

    Raises:
        UnsupportedPlatformError: unknown platform, or its verifier module is not installed.
    """
    p = parse_platform(platform)
    verifier = _verifiers.get(p)
    if verifier is not None:
        return verifier
    with _lock:
        verifier = _verifiers.get(p)
        if verifier is None:
            verifier = _build(p)
            _verifiers[p] = verifier
    return verifier


def verify_with(
    verifier: EvidenceVerifier,
    evidence: bytes,
    *,
    endorsements: Endorsements,
    now: datetime,
) -> VerifiedEvidence:
    """Run *verifier* with the dispatcher's guarantees (see the module docstring).

    Raises:
        VerificationError: the evidence is not authentic (the verifier's specific subclass),
            too large, or the verifier failed (:class:`InternalVerifierError`).
        UsageError: *now* is naive (it must carry a timezone, UTC by convention).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise UsageError("now must be a timezone-aware datetime (UTC), not a naive one")
    platform = verifier.platform
    if len(evidence) > MAX_EVIDENCE_BYTES:
        raise EvidenceFormatError(
            f"{platform} evidence is {len(evidence)} bytes, more than the "
            f"{MAX_EVIDENCE_BYTES}-byte limit; this is not TEE evidence"
        )
    try:
        # Typed as object: the point of the check below is not to trust the verifier's type.
        result: object = verifier.verify(evidence, endorsements=endorsements, now=now)
    except VerificationError:
        raise
    except Error as e:
        # A donjon error of another branch (a DecodeError from the wire layer, say) still means
        # the evidence did not verify; keep its message, type it as a verification failure.
        raise EvidenceFormatError(f"{platform} evidence: {e.diagnostics()}") from e
    except Exception as e:
        _logger.error("the %s verifier raised %s: a bug", platform, type(e).__name__)
        raise InternalVerifierError(
            f"the {platform} verifier failed unexpectedly ({type(e).__name__}: {e}); the "
            "evidence was not verified. This is a bug in donjon: please report it with the "
            "evidence file"
        ) from e
    if not isinstance(result, VerifiedEvidence) or result.platform is not platform:
        raise InternalVerifierError(
            f"the {platform} verifier returned {type(result).__name__} for platform "
            f"{getattr(result, 'platform', None)}; the evidence was not verified (a bug in donjon)"
        )
    return result


def verify_evidence(
    platform: Platform | str,
    evidence: bytes,
    *,
    endorsements: Endorsements,
    now: datetime,
) -> VerifiedEvidence:
    """Verify *evidence* of *platform* at *now* with the platform's shared verifier.

    Raises:
        VerificationError: not authentic; the subclass names the failure.
        UnsupportedPlatformError: unknown platform or verifier not installed.
        UsageError: *now* is naive.
    """
    return verify_with(verifier_for(platform), evidence, endorsements=endorsements, now=now)


def _build(platform: Platform) -> EvidenceVerifier:
    module, factory = _FACTORIES[platform]
    try:
        importlib.import_module(module)
        verifier = factory()
    except ImportError as e:
        raise UnsupportedPlatformError(
            f"no {platform} verifier in this installation ({module}: {e}); reinstall donjon"
        ) from e
    if verifier.platform is not platform:  # pragma: no cover - a wiring bug
        raise TypeError(f"{module} built a verifier for {verifier.platform}, not {platform}")
    return verifier


__all__ = [
    "MAX_EVIDENCE_BYTES",
    "InternalVerifierError",
    "UnsupportedPlatformError",
    "parse_platform",
    "verifier_for",
    "verify_evidence",
    "verify_with",
]

"""SEV-SNP negative (and synthetic positive) vectors, derived in memory from the real ones.

Every case names the error class the verifier must raise (``None``: it must accept), so each
is rejected for the intended reason and not by accident. Nothing is written to disk; the real
samples come from ``shared/vectors/sev-snp`` (see its PROVENANCE.md) and are only mutated here.

Kinds of cases, per real report (Milan v2 x2, Milan VLEK v3, Genoa v5, Turin v5) unless noted:

- signed-field flips (signature R/S, REPORT_DATA, MEASUREMENT, POLICY.DEBUG, ...) → SignatureError
- bounds: truncated, oversized, wrong VERSION / SIGNATURE_ALGO / VMPL / SIGNING_KEY, non-zero
  must-be-zero bytes → EvidenceFormatError; SIGNING_KEY none / MASK_CHIP_KEY → SignatureError
- endorsements: swapped certificates (another chip, another family, VCEK vs VLEK) →
  SnpEndorsementMismatchError; certificates expired or not yet valid at ``now`` →
  FreshnessError; missing or garbage certificates, trustee's crafted VCEK → ChainError
- a look-alike AMD hierarchy (same names as ARK-Milan / SEV-Milan / SEV-VCEK, other keys),
  generated at run time, which signs a copy of a real report → ChainError under the embedded
  roots; trusted explicitly, it also drives the cases real data cannot reach: a VCEK for another
  TCB, an expired ASK, revoked / stale / future / forged CRLs, PKCS#1 v1.5 instead of PSS.
- Azure HCL: runtime data altered (MeasurementError), malformed containers.

RSA key generation in ``cryptography`` is not deterministic, so the look-alike keys are made
once per process (``functools.cache``); every case's structure and expected outcome is fixed.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from donjon.attestation.snp import SnpEndorsementMismatchError
from donjon.attestation.snp.certs import load_certificates
from donjon.errors import (
    ChainError,
    EvidenceFormatError,
    FreshnessError,
    MeasurementError,
    SignatureError,
    VerificationError,
)

VERIFY_TIME = datetime(2025, 9, 1, tzinfo=UTC)
"""The manifest's verify_time for every SNP sample."""

# Offsets in the ATTESTATION_REPORT (SNP ABI "ATTESTATION_REPORT Structure"), restated here so
# the generator does not depend on the parser it tests.
VERSION, GUEST_SVN, POLICY, VMPL, SIG_ALGO, FLAGS = 0x000, 0x004, 0x008, 0x030, 0x034, 0x048
REPORT_DATA, MEASUREMENT, HOST_DATA, ID_KEY_DIGEST = 0x050, 0x090, 0x0C0, 0x0E0
REPORT_ID, REPORTED_TCB, CPUID, CHIP_ID = 0x140, 0x180, 0x188, 0x1A0
SIG_R, SIG_S, SIGNED = 0x2A0, 0x2E8, 0x2A0
HCL_REPORT = 0x20  # the SNP report inside an HCL report
HCL_RUNTIME = 0x4C0

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


@dataclass(frozen=True)
class SnpCase:
    """One derived vector and the outcome the verifier must reach.

    Attributes:
        evidence: report (or HCL report) bytes.
        certs: ``Endorsements.certs``.
        collateral: ``Endorsements.collateral``.
        now: verification time.
        error: the exact error class expected, or None when the evidence must verify.
        field: for SnpEndorsementMismatchError, the ``field`` attribute expected.
        message: a substring the error message must contain ("" for none).
        roots: certificates to trust instead of the embedded roots (the look-alike hierarchy).
    """

    evidence: bytes
    certs: tuple[bytes, ...]
    collateral: tuple[bytes, ...] = ()
    now: datetime = VERIFY_TIME
    error: type[VerificationError] | None = None
    field: str | None = None
    message: str = ""
    roots: tuple[x509.Certificate, ...] | None = None


@dataclass(frozen=True)
class Sample:
    """A real SNP sample from shared/vectors."""

    report: bytes
    leaf: bytes  # DER VCEK or VLEK
    chain: bytes  # PEM ASK/ASVK + ARK

    @property
    def certs(self) -> tuple[bytes, ...]:
        return (self.leaf, self.chain)

    def leaf_cert(self) -> x509.Certificate:
        return load_certificates(self.leaf, what="sample leaf")[0]


SAMPLES: dict[str, tuple[str, str, str]] = {
    "milan-gsg": ("milan-gsg/report.bin", "milan-gsg/vcek.der", "milan-vcek-ask-ark.pem"),
    "milan-trustee": (
        "milan-trustee/report.bin",
        "milan-trustee/vcek.der",
        "milan-vcek-ask-ark.pem",
    ),
    "milan-vlek-aws": (
        "milan-vlek-aws/report.bin",
        "milan-vlek-aws/vlek.der",
        "milan-vlek-ask-ark.pem",
    ),
    "genoa-oak": ("genoa-oak/report.bin", "genoa-oak/vcek.der", "genoa-vcek-ask-ark.pem"),
    "turin-oak": ("turin-oak/report.bin", "turin-oak/vcek.der", "turin-vcek-ask-ark.pem"),
}
"""Real samples with a raw report: name → (report, VCEK/VLEK, ASK/ARK) under sev-snp/."""


class Context:
    """Lazily loaded real samples for one vectors directory."""

    def __init__(self, vectors_dir: Path) -> None:
        self.root = vectors_dir / "sev-snp"

    @functools.cached_property
    def samples(self) -> dict[str, Sample]:
        out = {}
        for name, (report, leaf, chain) in SAMPLES.items():
            out[name] = Sample(
                report=(self.root / report).read_bytes(),
                leaf=(self.root / leaf).read_bytes(),
                chain=(self.root / "roots" / chain).read_bytes(),
            )
        return out

    @functools.cached_property
    def hcl(self) -> tuple[bytes, bytes]:
        folder = self.root / "azure-milan-hcl"
        return (folder / "hcl-report.bin").read_bytes(), (folder / "vcek-chain.pem").read_bytes()

    @functools.cached_property
    def fake_vcek(self) -> bytes:
        return (self.root / "neg-fake-vcek" / "vcek-invalid.der").read_bytes()


# -- byte helpers ------------------------------------------------------------------------------


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """*data* with the bits of *mask* flipped at *offset*."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def put_u32(data: bytes, offset: int, value: int) -> bytes:
    """*data* with a little-endian u32 written at *offset*."""
    out = bytearray(data)
    struct.pack_into("<I", out, offset, value)
    return bytes(out)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


# -- the look-alike AMD hierarchy ----------------------------------------------------------------


def _der_uint(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 8) // 8, "big")  # room for a sign bit
    return bytes((0x02, len(body))) + body


def _der_ia5(text: str) -> bytes:
    return bytes((0x16, len(text))) + text.encode("ascii")


def _amd_name(cn: str) -> x509.Name:
    # AMD's attribute order (OU first in DER; rfc4514_string prints it reversed), so that the
    # names compare equal to the real ones.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def ca_cert(
    cn: str,
    key: rsa.RSAPrivateKey,
    *,
    issuer_cn: str,
    issuer_key: rsa.RSAPrivateKey,
    not_before: datetime = datetime(2020, 1, 1, tzinfo=UTC),
    not_after: datetime = datetime(2045, 1, 1, tzinfo=UTC),
    key_cert_sign: bool = True,
    crl_sign: bool = True,
) -> x509.Certificate:
    """An RSA-PSS-signed CA certificate named like AMD's (ARK-*, SEV-*)."""
    return (
        x509.CertificateBuilder()
        .subject_name(_amd_name(cn))
        .issuer_name(_amd_name(issuer_cn))
        .public_key(key.public_key())
        .serial_number(0x10000 + len(cn))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=crl_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(issuer_key, hashes.SHA384(), rsa_padding=_PSS)
    )


@dataclass(frozen=True)
class LookAlike:
    """An RSA-PSS hierarchy named exactly like AMD's Milan one, with keys of its own."""

    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    ark: x509.Certificate
    ask: x509.Certificate

    def vcek(
        self,
        *,
        hw_id: bytes,
        spls: dict[int, int],
        product: str = "Milan-B0",
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
        not_before: datetime = datetime(2023, 1, 1, tzinfo=UTC),
        not_after: datetime = datetime(2030, 1, 1, tzinfo=UTC),
        pkcs1: bool = False,
        omit_hw_id: bool = False,
    ) -> x509.Certificate:
        """A VCEK with AMD's extensions, signed by the look-alike ASK."""
        arc = "1.3.6.1.4.1.3704.1"
        subject_key = key or self.vcek_key
        builder = (
            x509.CertificateBuilder()
            .subject_name(_amd_name("SEV-VCEK"))
            .issuer_name(self.ask.subject)
            .public_key(subject_key.public_key())
            .serial_number(1)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        values = [(f"{arc}.1", _der_uint(0)), (f"{arc}.2", _der_ia5(product))]
        values += [(f"{arc}.3.{n}", _der_uint(v)) for n, v in sorted(spls.items())]
        if not omit_hw_id:
            values.append((f"{arc}.4", hw_id))
        for oid, value in values:
            ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)
            builder = builder.add_extension(ext, critical=False)
        if pkcs1:
            return builder.sign(self.ask_key, hashes.SHA384(), rsa_padding=padding.PKCS1v15())
        return builder.sign(self.ask_key, hashes.SHA384(), rsa_padding=_PSS)

    def crl(
        self,
        *,
        issuer: x509.Certificate,
        key: rsa.RSAPrivateKey,
        revoked: tuple[int, ...] = (),
        last_update: datetime = datetime(2025, 8, 20, tzinfo=UTC),
        next_update: datetime = datetime(2025, 9, 20, tzinfo=UTC),
    ) -> bytes:
        """A DER CRL in AMD's format (RSA-PSS SHA-384), issued in *issuer*'s name."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(last_update)
            .next_update(next_update)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(last_update)
                .build()
            )
        crl = builder.sign(key, hashes.SHA384(), rsa_padding=_PSS)
        return crl.public_bytes(Encoding.DER)


@functools.cache
def look_alike() -> LookAlike:
    """The look-alike hierarchy, made once per process (2048-bit RSA keeps tests fast)."""
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark = ca_cert("ARK-Milan", ark_key, issuer_cn="ARK-Milan", issuer_key=ark_key)
    ask = ca_cert("SEV-Milan", ask_key, issuer_cn="ARK-Milan", issuer_key=ark_key)
    return LookAlike(ark_key, ask_key, vcek_key, ark=ark, ask=ask)


def sign_report(report: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """*report* re-signed with *key*: ECDSA P-384 SHA-384, R and S as 72-byte little-endian."""
    r, s = decode_dss_signature(key.sign(report[:SIGNED], ec.ECDSA(hashes.SHA384())))
    out = bytearray(report)
    out[SIG_R : SIG_R + 72] = r.to_bytes(72, "little")
    out[SIG_S : SIG_S + 72] = s.to_bytes(72, "little")
    return bytes(out)


# Milan-trustee's TCB as VCEK SPL extensions (bl, tee, spl_4..7, snp, ucode), and its hwID.
_TRUSTEE_SPLS = {1: 3, 2: 0, 3: 8, 4: 0, 5: 0, 6: 0, 7: 0, 8: 115}


def _trustee_resigned(ctx: Context, la: LookAlike) -> tuple[bytes, bytes]:
    sample = ctx.samples["milan-trustee"]
    report = sign_report(sample.report, la.vcek_key)
    return report, sample.report[CHIP_ID : CHIP_ID + 64]


# -- the case registry -----------------------------------------------------------------------

Builder = Callable[[Context], SnpCase]
_CASES: dict[str, Builder] = {}


def _register(name: str, builder: Builder) -> None:
    if name in _CASES:
        raise RuntimeError(f"duplicate case {name}")
    _CASES[name] = builder


def _mutated(
    sample: str,
    mutate: Callable[[bytes], bytes],
    error: type[VerificationError],
    *,
    field: str | None = None,
    message: str = "",
) -> Builder:
    def build(ctx: Context) -> SnpCase:
        s = ctx.samples[sample]
        return SnpCase(mutate(s.report), s.certs, error=error, field=field, message=message)

    return build


def _signing_key(report: bytes, value: int) -> bytes:
    flags = struct.unpack_from("<I", report, FLAGS)[0]
    return put_u32(report, FLAGS, (flags & ~0b11100) | (value << 2))


def _register_report_cases() -> None:
    for name in SAMPLES:
        # Signed fields: any change breaks the signature (check 16).
        for label, offset, mask in (
            ("signature-r", SIG_R, 0x01),
            ("signature-s", SIG_S + 10, 0x80),
            ("report-data", REPORT_DATA, 0x01),
            ("measurement", MEASUREMENT + 47, 0x01),
            ("host-data", HOST_DATA, 0x01),
            ("guest-svn", GUEST_SVN, 0x01),
            ("policy-debug", POLICY + 2, 0x08),  # bit 19: turn DEBUG on or off
            ("id-key-digest", ID_KEY_DIGEST, 0x01),
            ("report-id", REPORT_ID + 31, 0x01),
        ):
            _register(
                f"{name}/flip-{label}",
                _mutated(name, functools.partial(flip, offset=offset, mask=mask), SignatureError),
            )
        # Bounds (checks 1-6).
        for label, mutate in (
            ("truncated-1183", lambda r: r[:-1]),
            ("truncated-signed-part", lambda r: r[:SIGNED]),
            ("empty", lambda r: b""),
            ("oversized-1185", lambda r: r + b"\0"),
            ("oversized-double", lambda r: r + r),
        ):
            _register(f"{name}/{label}", _mutated(name, mutate, EvidenceFormatError))
        for version in (0, 1, 4, 6, 0xFFFFFFFF):
            _register(
                f"{name}/version-{version}",
                _mutated(
                    name,
                    functools.partial(put_u32, offset=VERSION, value=version),
                    EvidenceFormatError,
                    message="version",
                ),
            )
        for algo in (0, 2):
            _register(
                f"{name}/signature-algo-{algo}",
                _mutated(
                    name,
                    functools.partial(put_u32, offset=SIG_ALGO, value=algo),
                    EvidenceFormatError,
                    message="SIGNATURE_ALGO",
                ),
            )
        for vmpl in (4, 0xFFFFFFFF):
            _register(
                f"{name}/vmpl-{vmpl}",
                _mutated(
                    name,
                    functools.partial(put_u32, offset=VMPL, value=vmpl),
                    EvidenceFormatError,
                    message="VMPL",
                ),
            )
        for key in (2, 3, 6):
            _register(
                f"{name}/signing-key-reserved-{key}",
                _mutated(
                    name,
                    functools.partial(_signing_key, value=key),
                    EvidenceFormatError,
                    message="SIGNING_KEY",
                ),
            )
        _register(
            f"{name}/signing-key-none",
            _mutated(
                name, functools.partial(_signing_key, value=7), SignatureError, message="not signed"
            ),
        )
        _register(
            f"{name}/mask-chip-key",
            _mutated(name, functools.partial(flip, offset=FLAGS, mask=0x02), SignatureError),
        )
        reserved = [0x04C, 0x04F, 0x19F, 0x1EB, 0x1EF, 0x29F, 0x330, 0x49F]
        if name in ("milan-gsg", "milan-trustee"):  # version 2: no CPUID, no mitigation vectors
            reserved += [CPUID, CPUID + 2, 0x1F8, 0x207]
        elif name == "milan-vlek-aws":  # version 3: no mitigation vectors
            reserved += [0x1F8, 0x207]
        for offset in reserved:
            _register(
                f"{name}/reserved-{offset:#05x}",
                _mutated(
                    name,
                    functools.partial(flip, offset=offset),
                    EvidenceFormatError,
                    message="reserved",
                ),
            )
        # Endorsement binding (checks 12-15) runs before the signature, so these name the field.
        _register(
            f"{name}/reported-tcb-changed",
            _mutated(
                name,
                functools.partial(flip, offset=REPORTED_TCB + 7),  # the microcode SPL
                SnpEndorsementMismatchError,
                field="reported_tcb",
            ),
        )
        other = 0 if name == "milan-vlek-aws" else 1
        _register(
            f"{name}/signing-key-says-{'vcek' if other == 0 else 'vlek'}",
            _mutated(
                name,
                functools.partial(_signing_key, value=other),
                SnpEndorsementMismatchError,
                field="signing_key",
            ),
        )
        if name != "milan-vlek-aws":
            _register(
                f"{name}/chip-id-changed",
                _mutated(
                    name,
                    functools.partial(flip, offset=CHIP_ID + 3),
                    SnpEndorsementMismatchError,
                    field="chip_id",
                ),
            )
        if name in ("milan-vlek-aws", "genoa-oak", "turin-oak"):  # version 3+: CPUID present
            _register(
                f"{name}/cpuid-other-family",
                _mutated(
                    name,
                    # Milan/Genoa (family 0x19) become 0x1A (Turin) and Turin becomes 0x19.
                    functools.partial(flip, offset=CPUID, mask=0x03),
                    SnpEndorsementMismatchError,
                    field="family",
                ),
            )
        # Time (check 10): just outside the leaf's validity.
        _register(f"{name}/leaf-expired", _time_case(name, after=True))
        _register(f"{name}/leaf-not-yet-valid", _time_case(name, after=False))
        # Missing or unusable endorsements (checks 8-9).
        _register(f"{name}/no-vcek", _endorsements_case(name, lambda s: (s.chain,), "no VCEK/VLEK"))
        _register(f"{name}/no-endorsements", _endorsements_case(name, lambda s: (), "no VCEK/VLEK"))
        _register(
            f"{name}/garbage-cert",
            _endorsements_case(name, lambda s: (b"\x30\x03\x02\x01\x00",), "not a DER or PEM"),
        )
        _register(
            f"{name}/vcek-tampered",
            _endorsements_case(name, lambda s: (flip(s.leaf, len(s.leaf) - 300), s.chain), ""),
        )


def _time_case(name: str, *, after: bool) -> Builder:
    def build(ctx: Context) -> SnpCase:
        s = ctx.samples[name]
        leaf = s.leaf_cert()
        if after:
            now = leaf.not_valid_after_utc + timedelta(seconds=1)
            return SnpCase(s.report, s.certs, now=now, error=FreshnessError, message="expired")
        now = leaf.not_valid_before_utc - timedelta(seconds=1)
        return SnpCase(s.report, s.certs, now=now, error=FreshnessError, message="not valid before")

    return build


def _endorsements_case(
    name: str, certs: Callable[[Sample], tuple[bytes, ...]], message: str
) -> Builder:
    def build(ctx: Context) -> SnpCase:
        s = ctx.samples[name]
        return SnpCase(s.report, certs(s), error=ChainError, message=message)

    return build


def _register_swaps() -> None:
    """Real certificates that chain to AMD but belong to another report."""

    def swap(report: str, cert_from: str, field: str) -> Builder:
        def build(ctx: Context) -> SnpCase:
            mine, theirs = ctx.samples[report], ctx.samples[cert_from]
            return SnpCase(
                mine.report, theirs.certs, error=SnpEndorsementMismatchError, field=field
            )

        return build

    _register(
        "swap/milan-trustee-report+milan-gsg-vcek", swap("milan-trustee", "milan-gsg", "chip_id")
    )
    _register(
        "swap/milan-gsg-report+milan-trustee-vcek", swap("milan-gsg", "milan-trustee", "chip_id")
    )
    _register("swap/genoa-report+turin-vcek", swap("genoa-oak", "turin-oak", "family"))
    _register("swap/turin-report+genoa-vcek", swap("turin-oak", "genoa-oak", "family"))
    _register("swap/genoa-report+milan-vcek", swap("genoa-oak", "milan-trustee", "family"))
    _register("swap/vlek-report+vcek", swap("milan-vlek-aws", "milan-trustee", "signing_key"))
    _register("swap/vcek-report+vlek", swap("milan-trustee", "milan-vlek-aws", "signing_key"))

    def fake(ctx: Context) -> SnpCase:
        s = ctx.samples["milan-trustee"]
        return SnpCase(
            s.report, (ctx.fake_vcek, s.chain), error=ChainError, message="does not verify"
        )

    _register("trustee-fake-vcek", fake)


def _register_look_alike() -> None:
    """A real report re-signed by a hierarchy with AMD's names and other keys."""

    def under_embedded(
        certs: Callable[[LookAlike, bytes], tuple[bytes, ...]], message: str
    ) -> Builder:
        def build(ctx: Context) -> SnpCase:
            la = look_alike()
            report, chip = _trustee_resigned(ctx, la)
            vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
            return SnpCase(report, certs(la, der(vcek)), error=ChainError, message=message)

        return build

    _register(
        "look-alike/full-chain",
        under_embedded(lambda la, v: (v, pem(la.ask, la.ark)), "look-alike root"),
    )
    _register(
        "look-alike/ask-only",
        under_embedded(lambda la, v: (v, pem(la.ask)), "not signed by the embedded AMD ARK-Milan"),
    )
    _register("look-alike/vcek-only", under_embedded(lambda la, v: (v,), "does not verify"))


def _register_synthetic() -> None:
    """Cases under the look-alike hierarchy, trusted explicitly: what real data cannot reach."""

    def case(
        make: Callable[[Context, LookAlike, bytes, bytes], SnpCase],
    ) -> Builder:
        def build(ctx: Context) -> SnpCase:
            la = look_alike()
            report, chip = _trustee_resigned(ctx, la)
            return make(ctx, la, report, chip)

        return build

    def roots(la: LookAlike) -> tuple[x509.Certificate, ...]:
        return (la.ark, la.ask)

    def ok(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
        return SnpCase(report, (der(vcek),), roots=roots(la))

    _register("synthetic/ok", case(ok))

    def ok_with_crls(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
        crls = (
            la.crl(issuer=la.ark, key=la.ark_key, revoked=(999,)),
            la.crl(issuer=la.ask, key=la.ask_key),
        )
        return SnpCase(report, (der(vcek),), collateral=crls, roots=roots(la))

    _register("synthetic/ok-with-crls", case(ok_with_crls))

    def other_tcb(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls={**_TRUSTEE_SPLS, 1: 2})  # bl 2 instead of 3
        return SnpCase(
            report,
            (der(vcek),),
            roots=roots(la),
            error=SnpEndorsementMismatchError,
            field="reported_tcb",
        )

    _register("synthetic/vcek-for-other-tcb", case(other_tcb))

    def other_chip(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=bytes(range(64)), spls=_TRUSTEE_SPLS)
        return SnpCase(
            report,
            (der(vcek),),
            roots=roots(la),
            error=SnpEndorsementMismatchError,
            field="chip_id",
        )

    _register("synthetic/vcek-for-other-chip", case(other_chip))

    def expired_ask(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        ask = ca_cert(
            "SEV-Milan",
            la.ask_key,
            issuer_cn="ARK-Milan",
            issuer_key=la.ark_key,
            not_after=datetime(2025, 1, 1, tzinfo=UTC),
        )
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
        return SnpCase(
            report, (der(vcek), pem(ask)), roots=(la.ark,), error=FreshnessError, message="ASK"
        )

    _register("synthetic/ask-expired", case(expired_ask))

    def ask_usage(*, key_cert_sign: bool, crl_sign: bool, message: str) -> Builder:
        def make(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
            # AMD's real ASKs may sign certificates but not CRLs.
            ask = ca_cert(
                "SEV-Milan",
                la.ask_key,
                issuer_cn="ARK-Milan",
                issuer_key=la.ark_key,
                key_cert_sign=key_cert_sign,
                crl_sign=crl_sign,
            )
            vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
            crl = la.crl(issuer=la.ask, key=la.ask_key)
            return SnpCase(
                report,
                (der(vcek), pem(ask)),
                collateral=(crl,),
                roots=(la.ark,),
                error=ChainError,
                message=message,
            )

        return case(make)

    _register(
        "synthetic/crl-from-an-ask-that-may-not-sign-crls",
        ask_usage(key_cert_sign=True, crl_sign=False, message="may not sign CRLs"),
    )
    _register(
        "synthetic/ask-that-may-not-sign-certificates",
        ask_usage(key_cert_sign=False, crl_sign=True, message="may not sign certificates"),
    )

    def wrong_key_type(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS, key=ec.generate_private_key(ec.SECP256R1()))
        return SnpCase(report, (der(vcek),), roots=roots(la), error=ChainError, message="P-384")

    _register("synthetic/vcek-p256", case(wrong_key_type))

    def other_vcek_key(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS, key=ec.generate_private_key(ec.SECP384R1()))
        return SnpCase(report, (der(vcek),), roots=roots(la), error=SignatureError)

    _register("synthetic/vcek-other-key", case(other_vcek_key))

    def pkcs1(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS, pkcs1=True)
        return SnpCase(report, (der(vcek),), roots=roots(la), error=ChainError)

    _register("synthetic/vcek-pkcs1v15", case(pkcs1))

    def no_hw_id(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS, omit_hw_id=True)
        return SnpCase(report, (der(vcek),), roots=roots(la), error=ChainError, message="hwID")

    _register("synthetic/vcek-without-hwid", case(no_hw_id))

    def wrong_product(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS, product="Genoa-B1")
        return SnpCase(
            report, (der(vcek),), roots=roots(la), error=ChainError, message="productName"
        )

    _register("synthetic/vcek-genoa-product-under-milan", case(wrong_product))

    def missing_spl(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        spls = {k: v for k, v in _TRUSTEE_SPLS.items() if k != 8}
        vcek = la.vcek(hw_id=chip, spls=spls)
        return SnpCase(report, (der(vcek),), roots=roots(la), error=ChainError, message="ucodeSPL")

    _register("synthetic/vcek-without-ucode-spl", case(missing_spl))

    def crl_case(
        *,
        revoke_vcek: bool = False,
        revoke_ask: bool = False,
        last_update: datetime = datetime(2025, 8, 20, tzinfo=UTC),
        next_update: datetime = datetime(2025, 9, 20, tzinfo=UTC),
        forged: bool = False,
        error: type[VerificationError],
        message: str,
    ) -> Builder:
        def make(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
            vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
            if revoke_vcek:
                crl = la.crl(issuer=la.ask, key=la.ask_key, revoked=(vcek.serial_number,))
            else:
                crl = la.crl(
                    issuer=la.ark,
                    key=la.ask_key if forged else la.ark_key,
                    revoked=(la.ask.serial_number,) if revoke_ask else (),
                    last_update=last_update,
                    next_update=next_update,
                )
            return SnpCase(
                report,
                (der(vcek),),
                collateral=(crl,),
                roots=roots(la),
                error=error,
                message=message,
            )

        return case(make)

    _register(
        "synthetic/crl-revokes-vcek",
        crl_case(revoke_vcek=True, error=ChainError, message="revoked"),
    )
    _register(
        "synthetic/crl-revokes-ask", crl_case(revoke_ask=True, error=ChainError, message="revoked")
    )
    _register(
        "synthetic/crl-stale",
        crl_case(
            last_update=datetime(2025, 7, 1, tzinfo=UTC),
            next_update=datetime(2025, 8, 1, tzinfo=UTC),
            error=FreshnessError,
            message="expired",
        ),
    )
    _register(
        "synthetic/crl-from-the-future",
        crl_case(
            last_update=datetime(2025, 9, 2, tzinfo=UTC),
            next_update=datetime(2025, 10, 2, tzinfo=UTC),
            error=FreshnessError,
            message="not valid before",
        ),
    )
    _register(
        "synthetic/crl-forged",
        crl_case(forged=True, error=ChainError, message="forged"),
    )

    def crl_garbage(ctx: Context, la: LookAlike, report: bytes, chip: bytes) -> SnpCase:
        vcek = la.vcek(hw_id=chip, spls=_TRUSTEE_SPLS)
        return SnpCase(
            report,
            (der(vcek),),
            collateral=(b"not a crl",),
            roots=roots(la),
            error=ChainError,
            message="not a DER or PEM CRL",
        )

    _register("synthetic/crl-garbage", case(crl_garbage))


def _register_hcl() -> None:
    def hcl(
        mutate: Callable[[bytes], bytes], error: type[VerificationError], message: str = ""
    ) -> Builder:
        def build(ctx: Context) -> SnpCase:
            data, chain = ctx.hcl
            return SnpCase(mutate(data), (chain,), error=error, message=message)

        return build

    json_start = HCL_RUNTIME + 20
    _register("hcl/runtime-data-changed", hcl(lambda d: flip(d, json_start + 10), MeasurementError))
    _register(
        "hcl/report-signature-flipped", hcl(lambda d: flip(d, HCL_REPORT + SIG_R), SignatureError)
    )
    _register(
        "hcl/report-data-flipped",
        hcl(lambda d: flip(d, HCL_REPORT + REPORT_DATA), SignatureError),
    )
    _register("hcl/truncated-header", hcl(lambda d: d[:0x30], EvidenceFormatError))
    _register(
        "hcl/truncated-runtime-data", hcl(lambda d: d[: json_start + 100], EvidenceFormatError)
    )
    _register(
        "hcl/header-version-9", hcl(lambda d: put_u32(d, 4, 9), EvidenceFormatError, "version")
    )
    _register(
        "hcl/report-type-tdx",
        hcl(lambda d: put_u32(d, HCL_RUNTIME + 8, 4), EvidenceFormatError, "TDX"),
    )
    _register(
        "hcl/hash-type-0", hcl(lambda d: put_u32(d, HCL_RUNTIME + 12, 0), EvidenceFormatError)
    )
    _register("hcl/padding-not-zero", hcl(lambda d: flip(d, len(d) - 1), EvidenceFormatError))
    _register("hcl/report-size-wrong", hcl(lambda d: put_u32(d, 8, 100), EvidenceFormatError))


_register_report_cases()
_register_swaps()
_register_look_alike()
_register_synthetic()
_register_hcl()

CASE_NAMES: tuple[str, ...] = tuple(_CASES)
"""Every case, in a fixed order (pytest parametrizes over these)."""


def build_case(name: str, ctx: Context) -> SnpCase:
    """Build the case *name* from the real samples in *ctx*."""
    return _CASES[name](ctx)

"""The SEV-SNP ATTESTATION_REPORT: a pure parser from 1184 bytes to a frozen :class:`SnpReport`.

Layout: SEV-SNP Firmware ABI Specification (AMD #56860), table "ATTESTATION_REPORT Structure"
(Table 23 in revision 1.58; numbering moves between revisions), and the appendix table
"ECDSA P-384 with SHA-384 Signature" for the signature. Report versions:

- 2 (ABI 1.51+): the base layout;
- 3 (ABI 1.55+): adds CPUID_FAM_ID, CPUID_MOD_ID and CPUID_STEP at 0x188-0x18A;
- 5 (ABI 1.58+): adds LAUNCH_MIT_VECTOR (0x1F8) and CURRENT_MIT_VECTOR (0x200).

Rule 1: every byte is accounted for. Fields are read, and reserved ranges the specification marks
must-be-zero (MBZ) are checked to be zero, so a report either parses completely or raises
:class:`~donjon.errors.EvidenceFormatError` saying which byte range is wrong.
Rule 2: parsing does not mean authentic. Nothing here checks the signature; a parsed report is
only trusted after :class:`donjon.attestation.snp.SnpVerifier` has verified it.
Rule 3: TCB fields stay raw 64-bit integers here, because their byte layout depends on the
product family (:mod:`donjon.attestation.snp.tcb`), which only the signing key's chain proves.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from donjon.attestation.snp.tcb import ProductFamily
from donjon.errors import EvidenceFormatError

__all__ = [
    "MAX_VMPL",
    "REPORT_SIZE",
    "SIGNATURE_ALGO_ECDSA_P384_SHA384",
    "SIGNED_SIZE",
    "SUPPORTED_VERSIONS",
    "FirmwareVersion",
    "GuestPolicy",
    "PlatformInfo",
    "SigningKey",
    "SnpReport",
    "parse_report",
]

REPORT_SIZE = 0x4A0  # bytes (1184): the fixed size of ATTESTATION_REPORT
SIGNED_SIZE = 0x2A0  # bytes (672): the signature covers bytes 0x000-0x29F
SUPPORTED_VERSIONS = frozenset({2, 3, 5})  # report layouts donjon knows byte for byte
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1  # the only algorithm the ABI defines for reports
MAX_VMPL = 3  # SNP has four VM privilege levels, 0 (most privileged) to 3

# The integer fields, by offset (byte fields are slices of the raw report). "x" skips bytes.
_INTEGERS = struct.Struct(
    "<IIQ"  # 0x000 VERSION, 0x004 GUEST_SVN, 0x008 POLICY
    "32x"  # 0x010 FAMILY_ID, 0x020 IMAGE_ID
    "IIQQI"  # 0x030 VMPL, 0x034 SIGNATURE_ALGO, 0x038 CURRENT_TCB, 0x040 PLATFORM_INFO, 0x048 flags
    "308x"  # 0x04C reserved .. 0x17F REPORT_ID_MA
    "Q"  # 0x180 REPORTED_TCB
    "88x"  # 0x188 CPUID, reserved, CHIP_ID
    "Q8xQQQ"  # 0x1E0 COMMITTED_TCB, 0x1E8 versions, 0x1F0 LAUNCH_TCB, 0x1F8/0x200 MIT vectors
    "664x"  # 0x208 reserved .. the end of the signature
)
_CPUID_VERSION = 3  # the first version with CPUID_FAM_ID/MOD_ID/STEP
_MIT_VERSION = 5  # the first version with LAUNCH_MIT_VECTOR/CURRENT_MIT_VECTOR
# Must-be-zero ranges per version: (start, end, what they follow).
_COMMON_MBZ = (
    (0x04C, 0x050, "after the flags word"),
    (0x1EB, 0x1EC, "after CURRENT_MAJOR"),
    (0x1EF, 0x1F0, "after COMMITTED_MAJOR"),
    (0x330, 0x4A0, "after the signature's S"),
)
_MBZ_RANGES = {
    2: (*_COMMON_MBZ, (0x188, 0x1A0, "after REPORTED_TCB"), (0x1F8, 0x2A0, "after LAUNCH_TCB")),
    3: (*_COMMON_MBZ, (0x18B, 0x1A0, "after CPUID_STEP"), (0x1F8, 0x2A0, "after LAUNCH_TCB")),
    5: (
        *_COMMON_MBZ,
        (0x18B, 0x1A0, "after CPUID_STEP"),
        (0x208, 0x2A0, "after CURRENT_MIT_VECTOR"),
    ),
}
_ZEROS = bytes(368)
# Claim name → bit of POLICY (ABI "Guest Policy Structure") and of PLATFORM_INFO.
_POLICY_FLAGS = (
    ("smt_allowed", 16),
    ("migrate_ma", 18),
    ("debug", 19),
    ("single_socket", 20),
    ("cxl_allowed", 21),
    ("mem_aes_256_xts", 22),
    ("rapl_dis", 23),
    ("ciphertext_hiding", 24),
    ("page_swap_disable", 25),
)
_PLATFORM_INFO_FLAGS = (
    ("smt_enabled", 0),
    ("tsme_enabled", 1),
    ("ecc_enabled", 2),
    ("rapl_disabled", 3),
    ("ciphertext_hiding_enabled", 4),
    ("alias_check_complete", 5),
)

# POLICY bits 0-25 are defined in ABI 1.58 (bit 17 is reserved and must be one); 26-63 reserved.
_POLICY_KNOWN_BITS = (1 << 26) - 1


class SigningKey(enum.IntEnum):
    """The SIGNING_KEY field (flags bits 4:2): which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


_SIGNING_KEY_VALUES = frozenset(int(k) for k in SigningKey)


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The guest POLICY (ABI table "Guest Policy Structure"), decoded.

    Attributes:
        raw: the 64-bit value.
    """

    raw: int

    def _bit(self, n: int) -> bool:
        return bool(self.raw >> n & 1)

    @property
    def abi_minor(self) -> int:
        """Minimum firmware ABI minor version the guest requires (bits 7:0)."""
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        """Minimum firmware ABI major version the guest requires (bits 15:8)."""
        return self.raw >> 8 & 0xFF

    @property
    def smt_allowed(self) -> bool:
        """Bit 16: the guest may run with simultaneous multithreading enabled."""
        return self._bit(16)

    @property
    def reserved_one(self) -> bool:
        """Bit 17: reserved, must be one (firmware refuses a launch without it)."""
        return self._bit(17)

    @property
    def migrate_ma(self) -> bool:
        """Bit 18: the guest may be associated with a migration agent."""
        return self._bit(18)

    @property
    def debug(self) -> bool:
        """Bit 19: the host may debug (decrypt) the guest. Authentic, but not confidential."""
        return self._bit(19)

    @property
    def single_socket(self) -> bool:
        """Bit 20: the guest may run on one socket only."""
        return self._bit(20)

    @property
    def cxl_allowed(self) -> bool:
        """Bit 21: CXL devices or memory may be attached."""
        return self._bit(21)

    @property
    def mem_aes_256_xts(self) -> bool:
        """Bit 22: AES-256-XTS memory encryption is required."""
        return self._bit(22)

    @property
    def rapl_dis(self) -> bool:
        """Bit 23: Running Average Power Limit must be disabled."""
        return self._bit(23)

    @property
    def ciphertext_hiding(self) -> bool:
        """Bit 24: ciphertext hiding for DRAM must be enabled."""
        return self._bit(24)

    @property
    def page_swap_disable(self) -> bool:
        """Bit 25: the guest may not use the page move/swap commands."""
        return self._bit(25)

    @property
    def unknown_bits(self) -> int:
        """Bits this version of donjon does not know (reserved in ABI 1.58)."""
        return self.raw & ~_POLICY_KNOWN_BITS

    def flags(self) -> dict[str, bool]:
        """The single-bit options by claim name, in bit order."""
        raw = self.raw
        return {name: bool(raw >> bit & 1) for name, bit in _POLICY_FLAGS}


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """PLATFORM_INFO (ABI table "PLATFORM_INFO Field"), decoded.

    Attributes:
        raw: the 64-bit value.
    """

    raw: int

    def _bit(self, n: int) -> bool:
        return bool(self.raw >> n & 1)

    @property
    def smt_enabled(self) -> bool:
        """Bit 0: SMT is enabled on the platform."""
        return self._bit(0)

    @property
    def tsme_enabled(self) -> bool:
        """Bit 1: transparent SME is enabled."""
        return self._bit(1)

    @property
    def ecc_enabled(self) -> bool:
        """Bit 2: the platform uses ECC memory."""
        return self._bit(2)

    @property
    def rapl_disabled(self) -> bool:
        """Bit 3: RAPL is disabled."""
        return self._bit(3)

    @property
    def ciphertext_hiding_enabled(self) -> bool:
        """Bit 4: ciphertext hiding is enabled for DRAM."""
        return self._bit(4)

    @property
    def alias_check_complete(self) -> bool:
        """Bit 5: memory alias detection completed with no aliases since the last reset."""
        return self._bit(5)

    def flags(self) -> dict[str, bool]:
        """The known bits by name, in bit order."""
        raw = self.raw
        return {name: bool(raw >> bit & 1) for name, bit in _PLATFORM_INFO_FLAGS}


@dataclass(frozen=True, slots=True)
class FirmwareVersion:
    """A firmware version as the report carries it (build, minor, major bytes)."""

    major: int
    minor: int
    build: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}"


@dataclass(frozen=True, slots=True)
class SnpReport:
    """A parsed, **not yet verified** SEV-SNP attestation report.

    Integer fields are decoded once; byte fields are read from ``raw`` (the exact report bytes)
    when asked for. TCB fields are raw 64-bit values (see
    :class:`~donjon.attestation.snp.tcb.TcbVersion` to read them with a family's layout).
    Construct it with :func:`parse_report` only.
    """

    version: int
    guest_svn: int
    policy: GuestPolicy
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: PlatformInfo
    flags: int
    reported_tcb: int
    committed_tcb: int
    launch_tcb: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    raw: bytes

    @property
    def family_id(self) -> bytes:
        """FAMILY_ID (0x010, 16 bytes) from the ID block."""
        return self.raw[0x010:0x020]

    @property
    def image_id(self) -> bytes:
        """IMAGE_ID (0x020, 16 bytes) from the ID block."""
        return self.raw[0x020:0x030]

    @property
    def report_data(self) -> bytes:
        """REPORT_DATA (0x050, 64 bytes): what the guest asked to bind."""
        return self.raw[0x050:0x090]

    @property
    def measurement(self) -> bytes:
        """MEASUREMENT (0x090, 48 bytes): the launch digest."""
        return self.raw[0x090:0x0C0]

    @property
    def host_data(self) -> bytes:
        """HOST_DATA (0x0C0, 32 bytes): data the host supplied at launch."""
        return self.raw[0x0C0:0x0E0]

    @property
    def id_key_digest(self) -> bytes:
        """ID_KEY_DIGEST (0x0E0, 48 bytes): SHA-384 of the ID block's key."""
        return self.raw[0x0E0:0x110]

    @property
    def author_key_digest(self) -> bytes:
        """AUTHOR_KEY_DIGEST (0x110, 48 bytes): SHA-384 of the author key."""
        return self.raw[0x110:0x140]

    @property
    def report_id(self) -> bytes:
        """REPORT_ID (0x140, 32 bytes)."""
        return self.raw[0x140:0x160]

    @property
    def report_id_ma(self) -> bytes:
        """REPORT_ID_MA (0x160, 32 bytes): the migration agent's report id."""
        return self.raw[0x160:0x180]

    @property
    def cpuid_fam_id(self) -> int | None:
        """CPUID_FAM_ID (0x188, version 3+): extended + base family."""
        return self.raw[0x188] if self.version >= _CPUID_VERSION else None

    @property
    def cpuid_mod_id(self) -> int | None:
        """CPUID_MOD_ID (0x189, version 3+): extended + base model."""
        return self.raw[0x189] if self.version >= _CPUID_VERSION else None

    @property
    def cpuid_step(self) -> int | None:
        """CPUID_STEP (0x18A, version 3+): stepping."""
        return self.raw[0x18A] if self.version >= _CPUID_VERSION else None

    @property
    def chip_id(self) -> bytes:
        """CHIP_ID (0x1A0, 64 bytes); zero when MASK_CHIP_ID is set."""
        return self.raw[0x1A0:0x1E0]

    @property
    def current_version(self) -> FirmwareVersion:
        """CURRENT_MAJOR.CURRENT_MINOR.CURRENT_BUILD (0x1E8-0x1EA)."""
        return _version(self.raw[0x1E8:0x1EB])

    @property
    def committed_version(self) -> FirmwareVersion:
        """COMMITTED_MAJOR.COMMITTED_MINOR.COMMITTED_BUILD (0x1EC-0x1EE)."""
        return _version(self.raw[0x1EC:0x1EF])

    @property
    def signature_r(self) -> bytes:
        """R of the signature (0x2A0, 72 bytes, little-endian)."""
        return self.raw[0x2A0:0x2E8]

    @property
    def signature_s(self) -> bytes:
        """S of the signature (0x2E8, 72 bytes, little-endian)."""
        return self.raw[0x2E8:0x330]

    @property
    def signed_bytes(self) -> bytes:
        """Bytes 0x000-0x29F, which the signature covers."""
        return self.raw[:SIGNED_SIZE]

    @property
    def author_key_en(self) -> bool:
        """Flags bit 0: AUTHOR_KEY_DIGEST is present."""
        return bool(self.flags & 1)

    @property
    def mask_chip_key(self) -> bool:
        """Flags bit 1: the guest asked for an unsigned report (signature zeroed)."""
        return bool(self.flags >> 1 & 1)

    @property
    def signing_key(self) -> SigningKey:
        """Flags bits 4:2: which key signed the report."""
        return SigningKey(self.flags >> 2 & 0b111)

    @property
    def chip_id_masked(self) -> bool:
        """CHIP_ID is all zero: MASK_CHIP_ID is set (or the key is a VLEK)."""
        return self.raw[0x1A0:0x1E0] == _ZEROS[:64]

    @property
    def cpuid_fam_mod_step(self) -> bytes:
        """The three CPUID bytes (zero before version 3)."""
        return self.raw[0x188:0x18B] if self.version >= _CPUID_VERSION else bytes(3)

    @property
    def cpu_family(self) -> ProductFamily | None:
        """The product family the CPUID fields name (version 3+), or None."""
        if self.version < _CPUID_VERSION:
            return None
        return ProductFamily.from_cpuid(self.raw[0x188], self.raw[0x189])


def _must_be_zero(data: bytes, start: int, end: int, what: str) -> None:
    if data[start:end] != _ZEROS[: end - start]:
        bad = next(i for i in range(start, end) if data[i])
        raise EvidenceFormatError(
            f"SNP report: reserved bytes {start:#05x}-{end - 1:#05x} ({what}) must be zero, "
            f"byte {bad:#05x} is {data[bad]:#04x}; this is not a genuine report of version "
            f"{int.from_bytes(data[0:4], 'little')}"
        )


def _version(fields: bytes) -> FirmwareVersion:
    return FirmwareVersion(major=fields[2], minor=fields[1], build=fields[0])


def parse_report(data: bytes) -> SnpReport:
    """Parse an SEV-SNP ATTESTATION_REPORT (checks 1-6 of the verifier).

    Args:
        data: exactly 1184 bytes, as ``/dev/sev-guest`` or configfs-tsm ``outblob`` returns them.

    Raises:
        EvidenceFormatError: wrong size, an unsupported version or signature algorithm, a VMPL
            above 3, a reserved SIGNING_KEY value, or a non-zero must-be-zero byte.
    """
    data = bytes(data)
    # Check 1: size (ABI "ATTESTATION_REPORT Structure": 0x4A0 bytes).
    if len(data) != REPORT_SIZE:
        raise EvidenceFormatError(
            f"SNP report is {len(data)} bytes, expected exactly {REPORT_SIZE}: pass the raw "
            "report (configfs-tsm outblob or the report field of the SNP_GET_REPORT response)"
        )
    (
        version,  # 0x000
        guest_svn,  # 0x004
        policy,  # 0x008
        vmpl,  # 0x030
        signature_algo,  # 0x034
        current_tcb,  # 0x038
        platform_info,  # 0x040
        flags,  # 0x048
        reported_tcb,  # 0x180
        committed_tcb,  # 0x1E0
        launch_tcb,  # 0x1F0
        launch_mit,  # 0x1F8 (v5; reserved before)
        current_mit,  # 0x200 (v5; reserved before)
    ) = _INTEGERS.unpack(data)
    # Check 2: version (2, 3 and 5 are the layouts this parser knows).
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceFormatError(
            f"SNP report version {version} is not supported (supported: "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}); check that this is an SNP "
            "attestation report and update donjon if the firmware is newer"
        )
    # Check 3: signature algorithm (ABI "Signature Algorithm Encodings": 1 = ECDSA P-384 SHA-384).
    if signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise EvidenceFormatError(
            f"SNP report SIGNATURE_ALGO is {signature_algo}, expected "
            f"{SIGNATURE_ALGO_ECDSA_P384_SHA384} (ECDSA P-384 with SHA-384)"
        )
    # Check 4: VMPL of the request, 0..3.
    if vmpl > MAX_VMPL:
        raise EvidenceFormatError(f"SNP report VMPL is {vmpl}, expected 0..{MAX_VMPL}")
    # Check 5: SIGNING_KEY (flags bits 4:2) is 0 (VCEK), 1 (VLEK) or 7 (none); 2-6 are reserved.
    signing_key = flags >> 2 & 0b111
    if signing_key not in _SIGNING_KEY_VALUES:
        raise EvidenceFormatError(
            f"SNP report SIGNING_KEY is {signing_key}, a reserved value (0 = VCEK, 1 = VLEK, "
            "7 = none)"
        )
    # Check 6: must-be-zero ranges, per version (one comparison per range on the common path).
    for start, end, what in _MBZ_RANGES[version]:
        if data[start:end] != _ZEROS[: end - start]:
            _must_be_zero(data, start, end, what)
    v5 = version >= _MIT_VERSION
    return SnpReport(
        version=version,
        guest_svn=guest_svn,
        policy=GuestPolicy(policy),
        vmpl=vmpl,
        signature_algo=signature_algo,
        current_tcb=current_tcb,
        platform_info=PlatformInfo(platform_info),
        flags=flags,
        reported_tcb=reported_tcb,
        committed_tcb=committed_tcb,
        launch_tcb=launch_tcb,
        launch_mit_vector=launch_mit if v5 else None,
        current_mit_vector=current_mit if v5 else None,
        raw=data,
    )

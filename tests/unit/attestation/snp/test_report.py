"""The ATTESTATION_REPORT parser: offsets, versions, must-be-zero ranges, bounds."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from donjon.attestation.snp import (
    FirmwareVersion,
    GuestPolicy,
    PlatformInfo,
    ProductFamily,
    SigningKey,
    parse_report,
)
from donjon.attestation.snp.report import _INTEGERS, REPORT_SIZE, SIGNED_SIZE
from donjon.errors import EvidenceFormatError


def _real(vectors_dir: Path, name: str) -> bytes:
    return (vectors_dir / "sev-snp" / name / "report.bin").read_bytes()


def test_the_layout_covers_the_report_exactly() -> None:
    assert _INTEGERS.size == REPORT_SIZE == 1184
    assert SIGNED_SIZE == 0x2A0


def _report(version: int, fields: dict[int, bytes]) -> bytes:
    """A report of *version* with the given bytes at the given offsets, the rest valid zeros."""
    data = bytearray(REPORT_SIZE)
    struct.pack_into("<I", data, 0x000, version)
    struct.pack_into("<I", data, 0x034, 1)  # SIGNATURE_ALGO
    for offset, value in fields.items():
        data[offset : offset + len(value)] = value
    return bytes(data)


# (offset, bytes written, attribute, value read back): every field of a version-5 report.
_V5_FIELDS = [
    (0x004, (7).to_bytes(4, "little"), "guest_svn", 7),
    (0x008, (0x30000).to_bytes(8, "little"), "policy", GuestPolicy(0x30000)),
    (0x010, bytes(range(1, 17)), "family_id", bytes(range(1, 17))),
    (0x020, bytes(range(17, 33)), "image_id", bytes(range(17, 33))),
    (0x030, (2).to_bytes(4, "little"), "vmpl", 2),
    (0x038, (0x1122334455667788).to_bytes(8, "little"), "current_tcb", 0x1122334455667788),
    (0x040, (0x25).to_bytes(8, "little"), "platform_info", PlatformInfo(0x25)),
    (0x048, (0b00101).to_bytes(4, "little"), "flags", 0b00101),
    (0x050, b"\xd0" * 64, "report_data", b"\xd0" * 64),
    (0x090, b"\x90" * 48, "measurement", b"\x90" * 48),
    (0x0C0, b"\xc0" * 32, "host_data", b"\xc0" * 32),
    (0x0E0, b"\xe0" * 48, "id_key_digest", b"\xe0" * 48),
    (0x110, b"\x11" * 48, "author_key_digest", b"\x11" * 48),
    (0x140, b"\x14" * 32, "report_id", b"\x14" * 32),
    (0x160, b"\x16" * 32, "report_id_ma", b"\x16" * 32),
    (0x180, (0x0102030405060708).to_bytes(8, "little"), "reported_tcb", 0x0102030405060708),
    (0x188, b"\x19", "cpuid_fam_id", 0x19),
    (0x189, b"\x11", "cpuid_mod_id", 0x11),
    (0x18A, b"\x01", "cpuid_step", 0x01),
    (0x1A0, b"\xa0" * 64, "chip_id", b"\xa0" * 64),
    (0x1E0, (0x0A0B).to_bytes(8, "little"), "committed_tcb", 0x0A0B),
    (0x1E8, b"\x03\x37\x01", "current_version", FirmwareVersion(1, 55, 3)),
    (0x1EC, b"\x02\x36\x01", "committed_version", FirmwareVersion(1, 54, 2)),
    (0x1F0, (0x0C0D).to_bytes(8, "little"), "launch_tcb", 0x0C0D),
    (0x1F8, (5).to_bytes(8, "little"), "launch_mit_vector", 5),
    (0x200, (6).to_bytes(8, "little"), "current_mit_vector", 6),
    (0x2A0, b"\x72" * 72, "signature_r", b"\x72" * 72),
    (0x2E8, b"\x73" * 72, "signature_s", b"\x73" * 72),
]


@pytest.mark.parametrize(("offset", "raw", "attribute", "value"), _V5_FIELDS)
def test_v5_field_offsets(offset: int, raw: bytes, attribute: str, value: object) -> None:
    report = parse_report(_report(5, {offset: raw}))
    assert getattr(report, attribute) == value


def test_all_fields_at_once_and_the_signed_part() -> None:
    data = _report(5, {offset: raw for offset, raw, _, _ in _V5_FIELDS})
    report = parse_report(data)
    for _, _, attribute, value in _V5_FIELDS:
        assert getattr(report, attribute) == value
    assert report.raw == data
    assert report.signed_bytes == data[:0x2A0]
    assert report.author_key_en is True
    assert report.mask_chip_key is False
    assert report.signing_key is SigningKey.VLEK
    assert report.cpuid_fam_mod_step == b"\x19\x11\x01"
    assert report.cpu_family is ProductFamily.GENOA


def test_version_2_has_no_cpuid_or_mitigation_vectors() -> None:
    report = parse_report(_report(2, {}))
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (None, None, None)
    assert report.cpuid_fam_mod_step == b"\0\0\0"
    assert report.cpu_family is None
    assert (report.launch_mit_vector, report.current_mit_vector) == (None, None)
    assert report.chip_id_masked is True


@pytest.mark.parametrize(
    ("version", "offset"),
    [
        (2, 0x188),  # CPUID bytes are reserved before version 3
        (2, 0x18A),
        (3, 0x1F8),  # mitigation vectors are reserved before version 5
        (3, 0x207),
        (2, 0x200),
    ],
)
def test_fields_of_later_versions_are_reserved_in_earlier_ones(version: int, offset: int) -> None:
    with pytest.raises(EvidenceFormatError, match=f"byte {offset:#05x}"):
        parse_report(_report(version, {offset: b"\x01"}))


@pytest.mark.parametrize("version", [2, 3, 5])
@pytest.mark.parametrize(
    "offset", [0x04C, 0x04F, 0x18B, 0x19F, 0x1EB, 0x1EF, 0x208, 0x29F, 0x330, 0x49F]
)
def test_must_be_zero(version: int, offset: int) -> None:
    with pytest.raises(EvidenceFormatError, match="reserved bytes"):
        parse_report(_report(version, {offset: b"\x80"}))


@pytest.mark.parametrize("version", [0, 1, 4, 6, 0x02000000])
def test_unsupported_versions(version: int) -> None:
    with pytest.raises(EvidenceFormatError, match=f"version {version} is not supported"):
        parse_report(_report(version, {}))


@pytest.mark.parametrize("size", [0, 1, 672, 1183, 1185, 2368])
def test_size(size: int) -> None:
    with pytest.raises(EvidenceFormatError, match=f"is {size} bytes, expected exactly 1184"):
        parse_report(bytes(size))


def test_signature_algorithm() -> None:
    with pytest.raises(EvidenceFormatError, match="SIGNATURE_ALGO is 2"):
        parse_report(_report(2, {0x034: b"\x02"}))


@pytest.mark.parametrize("vmpl", [0, 1, 2, 3])
def test_vmpl_in_range(vmpl: int) -> None:
    assert parse_report(_report(2, {0x030: bytes([vmpl])})).vmpl == vmpl


@pytest.mark.parametrize("vmpl", [4, 0xFF, 0xFFFFFFFF])
def test_vmpl_out_of_range(vmpl: int) -> None:
    with pytest.raises(EvidenceFormatError, match="VMPL"):
        parse_report(_report(2, {0x030: vmpl.to_bytes(4, "little")}))


@pytest.mark.parametrize(
    ("value", "key"), [(0, SigningKey.VCEK), (1, SigningKey.VLEK), (7, SigningKey.NONE)]
)
def test_signing_key_values(value: int, key: SigningKey) -> None:
    assert parse_report(_report(2, {0x048: bytes([value << 2])})).signing_key is key


@pytest.mark.parametrize("value", [2, 3, 4, 5, 6])
def test_signing_key_reserved(value: int) -> None:
    with pytest.raises(EvidenceFormatError, match=f"SIGNING_KEY is {value}"):
        parse_report(_report(2, {0x048: bytes([value << 2])}))


def test_guest_policy_bits() -> None:
    gsg = GuestPolicy(0xB0000)
    assert (gsg.smt_allowed, gsg.reserved_one, gsg.migrate_ma, gsg.debug) == (
        True,
        True,
        False,
        True,
    )
    trustee = GuestPolicy(0x3001F)
    assert (trustee.abi_major, trustee.abi_minor, trustee.debug) == (0, 31, False)
    every = GuestPolicy((1 << 26) - 1)
    assert all(every.flags().values())
    assert every.unknown_bits == 0
    assert GuestPolicy(1 << 40).unknown_bits == 1 << 40
    assert list(trustee.flags()) == [
        "smt_allowed",
        "migrate_ma",
        "debug",
        "single_socket",
        "cxl_allowed",
        "mem_aes_256_xts",
        "rapl_dis",
        "ciphertext_hiding",
        "page_swap_disable",
    ]
    single = GuestPolicy(1 << 20 | 1 << 21 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25)
    assert (single.single_socket, single.cxl_allowed, single.mem_aes_256_xts) == (True, True, True)
    assert (single.rapl_dis, single.ciphertext_hiding, single.page_swap_disable) == (
        True,
        True,
        True,
    )


def test_platform_info_bits() -> None:
    turin = PlatformInfo(0x67)
    assert turin.flags() == {
        "smt_enabled": True,
        "tsme_enabled": True,
        "ecc_enabled": True,
        "rapl_disabled": False,
        "ciphertext_hiding_enabled": False,
        "alias_check_complete": True,
    }
    assert (turin.smt_enabled, turin.tsme_enabled, turin.ecc_enabled) == (True, True, True)
    assert (turin.rapl_disabled, turin.ciphertext_hiding_enabled) == (False, False)
    assert turin.alias_check_complete is True


@pytest.mark.parametrize(
    ("name", "version", "vmpl", "policy", "family", "signing_key"),
    [
        ("milan-gsg", 2, 0, 0xB0000, None, SigningKey.VCEK),
        ("milan-trustee", 2, 0, 0x3001F, None, SigningKey.VCEK),
        ("milan-vlek-aws", 3, 1, 0x30000, ProductFamily.MILAN, SigningKey.VLEK),
        ("genoa-oak", 5, 0, 0x30000, ProductFamily.GENOA, SigningKey.VCEK),
        ("turin-oak", 5, 0, 0x30000, ProductFamily.TURIN, SigningKey.VCEK),
    ],
)
def test_real_reports(
    vectors_dir: Path,
    name: str,
    version: int,
    vmpl: int,
    policy: int,
    family: ProductFamily | None,
    signing_key: SigningKey,
) -> None:
    report = parse_report(_real(vectors_dir, name))
    assert report.version == version
    assert report.vmpl == vmpl
    assert report.policy.raw == policy
    assert report.cpu_family is family
    assert report.signing_key is signing_key
    assert report.signature_algo == 1


def test_real_report_details(vectors_dir: Path) -> None:
    genoa = parse_report(_real(vectors_dir, "genoa-oak"))
    assert genoa.launch_mit_vector == 1
    assert genoa.current_mit_vector == 1
    assert genoa.launch_tcb == 0x541900000000000A
    assert str(genoa.current_version) == "1.55.43"
    aws = parse_report(_real(vectors_dir, "milan-vlek-aws"))
    assert aws.chip_id_masked is True
    assert aws.committed_tcb == 0xDB18000000000004
    assert aws.current_tcb == 0xDC18000000000004


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        report = parse_report(data)
    except EvidenceFormatError:
        return
    assert report.raw == data


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([2, 3, 5]),
    st.lists(st.tuples(st.integers(0, REPORT_SIZE - 1), st.integers(0, 255)), max_size=8),
)
def test_mutated_headers(version: int, writes: list[tuple[int, int]]) -> None:
    data = bytearray(_report(version, {}))
    for offset, value in writes:
        data[offset] = value
    try:
        report = parse_report(bytes(data))
    except EvidenceFormatError as e:
        assert e.diagnostics()
        return
    assert report.version in (2, 3, 5)
    assert report.vmpl <= 3

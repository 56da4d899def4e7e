"""Azure confidential-VM HCL reports: an SNP report plus runtime data bound to it.

On Azure, the paravisor (HCL) reads the SNP report and publishes it in a vTPM NV index as::

    0x000  header (32 bytes): "HCLA" | version u32 | report_size u32 | request_type u32
           | status u32 | reserved[12]
    0x020  hardware report (1184 bytes): the SEV-SNP ATTESTATION_REPORT
    0x4C0  runtime data header (20 bytes): data_size u32 | version u32 | report_type u32
           (2 = SNP, 4 = TDX) | hash_type u32 (1 = SHA-256, 2 = SHA-384, 3 = SHA-512)
           | variable_data_size u32
    0x4D4  variable data: the runtime-data JSON (keys HCLAkPub/HCLEkPub, vm-configuration,
           user-data)
           zero padding up to the NV index size

All integers are little-endian. The SNP report's REPORT_DATA is ``hash_type(variable data)``,
zero-padded to 64 bytes, which binds the JSON (and so the vTPM attestation key) to the report.
Nothing authenticates the two headers: they only locate the parts, their version and request
type fields are reported by :class:`HclReport` but never become claims, status must be 0 and
reserved bytes zero.
Layout as in Azure's and the Confidential Containers' parsers (kinvolk/azure-cvm-tooling
``az-cvm-vtpm/src/hcl``; confidential-containers/trustee ``deps/verifier/src/az_snp_vtpm``).

Does: detect and parse an HCL report, check the binding of the runtime data.
Does not: verify the SNP report (``SnpVerifier`` does), nor the vTPM quote.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

from donjon.attestation.snp.report import REPORT_SIZE
from donjon.errors import EvidenceFormatError, MeasurementError

__all__ = [
    "HCL_MAGIC",
    "MAX_HCL_REPORT_BYTES",
    "HclReport",
    "is_hcl_report",
    "parse_hcl_report",
]

HCL_MAGIC = b"HCLA"
_HEADER = struct.Struct("<4sIIII12s")
_RUNTIME_HEADER = struct.Struct("<IIIII")
_HW_REPORT_OFFSET = _HEADER.size  # 0x20
_RUNTIME_OFFSET = _HW_REPORT_OFFSET + REPORT_SIZE  # 0x4C0
_VARIABLE_OFFSET = _RUNTIME_OFFSET + _RUNTIME_HEADER.size  # 0x4D4
_SUPPORTED_HEADER_VERSIONS = frozenset({1, 2})  # same layout; Azure has published both
_REPORT_TYPE_SNP = 2
_REPORT_TYPE_TDX = 4
_HASHES = {1: "sha256", 2: "sha384", 3: "sha512"}
_HASH_FUNCTIONS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_HASH_LABELS = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}
_REPORT_DATA_BYTES = 64
# The vTPM NV index that holds the report is 2600 bytes on Azure today; 64 KiB bounds the JSON
# parse of a hostile input and leaves room for larger runtime data.
MAX_HCL_REPORT_BYTES = 64 * 1024


def is_hcl_report(data: bytes) -> bool:
    """Whether *data* starts like an Azure HCL report (and not like a raw SNP report)."""
    return data[:4] == HCL_MAGIC


@dataclass(frozen=True, slots=True)
class HclReport:
    """A parsed HCL report; its SNP report and binding are not yet verified.

    Attributes:
        version: header version.
        request_type: header request type.
        status: header status.
        snp_report: the 1184-byte SNP report.
        hash_name: the hash over ``runtime_data`` that REPORT_DATA must hold.
        runtime_data: the exact runtime-data bytes (JSON) bound into REPORT_DATA.
    """

    version: int
    request_type: int
    status: int
    snp_report: bytes
    hash_name: str
    runtime_data: bytes

    def expected_report_data(self) -> bytes:
        """The REPORT_DATA that binds ``runtime_data``: its digest, zero-padded to 64 bytes."""
        digest = _HASH_FUNCTIONS[self.hash_name](self.runtime_data).digest()
        return digest.ljust(_REPORT_DATA_BYTES, b"\0")

    def check_binding(self, report_data: bytes) -> None:
        """Check that the (verified) SNP REPORT_DATA binds the runtime data.

        Raises:
            MeasurementError: REPORT_DATA is not the digest of the runtime data.
        """
        if not hmac.compare_digest(report_data, self.expected_report_data()):
            raise MeasurementError(
                f"HCL report: REPORT_DATA is not the {_HASH_LABELS[self.hash_name]} of the runtime "
                "data; the runtime data (and its vTPM keys) were altered or belong to another "
                "report"
            )

    def runtime_claims(self) -> dict[str, Any]:
        """The runtime-data JSON object. Call only after :meth:`check_binding`.

        Raises:
            EvidenceFormatError: the runtime data is not a JSON object.
        """
        try:
            value = json.loads(self.runtime_data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise EvidenceFormatError(f"HCL report: runtime data is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise EvidenceFormatError("HCL report: runtime data is not a JSON object")
        return value


def parse_hcl_report(data: bytes) -> HclReport:
    """Parse an Azure HCL report (the bytes of the vTPM NV index).

    Raises:
        EvidenceFormatError: not an HCL report, an unknown version, a TDX report, inconsistent
            sizes, or non-zero bytes after the runtime data.
    """
    data = bytes(data)
    if len(data) > MAX_HCL_REPORT_BYTES:
        raise EvidenceFormatError(
            f"HCL report is {len(data)} bytes, more than the {MAX_HCL_REPORT_BYTES}-byte limit"
        )
    if len(data) < _VARIABLE_OFFSET:
        raise EvidenceFormatError(
            f"HCL report is {len(data)} bytes, shorter than its fixed part ({_VARIABLE_OFFSET})"
        )
    magic, version, report_size, request_type, status, reserved = _HEADER.unpack_from(data, 0)
    if magic != HCL_MAGIC:
        raise EvidenceFormatError("not an HCL report: it does not start with 'HCLA'")
    if status != 0:
        raise EvidenceFormatError(
            f"HCL report status is {status:#x}, not 0: the paravisor did not produce a report"
        )
    if any(reserved):
        raise EvidenceFormatError("HCL report header: reserved bytes 0x14-0x1F must be zero")
    if version not in _SUPPORTED_HEADER_VERSIONS:
        raise EvidenceFormatError(
            f"HCL report header version {version} is not supported "
            f"(supported: {sorted(_SUPPORTED_HEADER_VERSIONS)})"
        )
    data_size, _rt_version, report_type, hash_type, variable_size = _RUNTIME_HEADER.unpack_from(
        data, _RUNTIME_OFFSET
    )
    if report_type == _REPORT_TYPE_TDX:
        raise EvidenceFormatError(
            "HCL report carries a TDX report, not an SNP report: verify it with --platform tdx"
        )
    if report_type != _REPORT_TYPE_SNP:
        raise EvidenceFormatError(f"HCL report type {report_type} is not SNP ({_REPORT_TYPE_SNP})")
    hash_name = _HASHES.get(hash_type)
    if hash_name is None:
        raise EvidenceFormatError(f"HCL report hash type {hash_type} is unknown (1, 2 or 3)")
    end = _VARIABLE_OFFSET + variable_size
    if data_size != _RUNTIME_HEADER.size + variable_size or end > len(data):
        raise EvidenceFormatError(
            f"HCL report runtime data sizes are inconsistent (data_size {data_size}, "
            f"variable_data_size {variable_size}, {len(data)} bytes in all)"
        )
    if report_size != end:
        raise EvidenceFormatError(
            f"HCL report header says {report_size} bytes, its parts add up to {end}"
        )
    # count() runs in C; any() would iterate over the ~1 KiB of padding byte by byte.
    if data.count(0, end) != len(data) - end:
        raise EvidenceFormatError("HCL report: bytes after the runtime data must be zero padding")
    return HclReport(
        version=version,
        request_type=request_type,
        status=status,
        snp_report=data[_HW_REPORT_OFFSET:_RUNTIME_OFFSET],
        hash_name=hash_name,
        runtime_data=data[_VARIABLE_OFFSET:end],
    )

"""SEV-SNP TCB_VERSION values and the EPYC product families that lay them out differently.

A TCB_VERSION is a 64-bit value whose bytes are the security patch levels (SPLs) of the firmware
components (SEV-SNP Firmware ABI Specification, AMD #56860, "TCB_VERSION Structure"). Which byte
holds which component depends on the product family:

=========  ======  ======  ======  ======  ======  ======  ======  ======
family     byte 0  byte 1  byte 2  byte 3  byte 4  byte 5  byte 6  byte 7
=========  ======  ======  ======  ======  ======  ======  ======  ======
Milan      BL      TEE     (0)     (0)     (0)     (0)     SNP     UCODE
Genoa      BL      TEE     (0)     (0)     (0)     (0)     SNP     UCODE
Turin      FMC     BL      TEE     SNP     (0)     (0)     (0)     UCODE
=========  ======  ======  ======  ======  ======  ======  ======  ======

``(0)`` bytes are reserved. A report's TCB fields are raw integers until the family is known:
for version 2 reports only the VCEK/VLEK chain says which family signed them.

Does: decode, build and compare TCB_VERSION values per family.
Does not: decide which TCB is acceptable (that is the policy's job, using :meth:`TcbVersion.meets`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

U64_MAX = (1 << 64) - 1

__all__ = ["TCB_COMPONENTS", "ProductFamily", "TcbVersion", "tcb_fields"]

TCB_COMPONENTS = ("fmc", "bl", "tee", "snp", "ucode")
"""Every named component, in the order claims list them (``fmc`` exists on Turin only)."""

# Byte index → component name (None: reserved, must be zero).
_LEGACY_LAYOUT: tuple[str | None, ...] = ("bl", "tee", None, None, None, None, "snp", "ucode")
_TURIN_LAYOUT: tuple[str | None, ...] = ("fmc", "bl", "tee", "snp", None, None, None, "ucode")

# CPUID family (extended family + base family) → {model >> 4 → product family}. AMD's KDS serves
# one product line per entry: Genoa's line also covers Bergamo and Siena (models 0xA0-0xAF), and
# Turin's covers Turin dense (0x10-0x1F). Source: AMD family 19h/1Ah processor programming
# references, and the product names AMD KDS accepts (Milan, Genoa, Turin).
_CPUID_FAMILIES: dict[int, dict[int, str]] = {
    0x19: {0x0: "Milan", 0x1: "Genoa", 0xA: "Genoa"},
    0x1A: {0x0: "Turin", 0x1: "Turin"},
}


class ProductFamily(enum.StrEnum):
    """The EPYC product lines AMD's Key Distribution Service issues VCEKs for."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"

    @classmethod
    def from_cpuid(cls, family: int, model: int) -> ProductFamily | None:
        """The product line of a CPUID family/model pair, or None when it is not an SNP EPYC."""
        name = _CPUID_FAMILIES.get(family, {}).get(model >> 4)
        return None if name is None else cls(name)

    @classmethod
    def from_product_name(cls, name: str) -> ProductFamily | None:
        """The product line of a VCEK productName ("Milan-B0", "Genoa", "Turin"), or None."""
        base = name.split("-", 1)[0]
        for member in cls:
            if member.value == base:
                return member
        return None

    @property
    def layout(self) -> tuple[str | None, ...]:
        """Component name per TCB_VERSION byte (None for reserved bytes)."""
        return _TURIN_LAYOUT if self is ProductFamily.TURIN else _LEGACY_LAYOUT

    @property
    def components(self) -> tuple[str, ...]:
        """The named components this family's TCB_VERSION carries, in claim order."""
        return tuple(name for name, _ in _FIELD_SHIFTS[self])


def _field_shifts(layout: tuple[str | None, ...]) -> tuple[tuple[str, int], ...]:
    shifts = {name: 8 * index for index, name in enumerate(layout) if name is not None}
    return tuple((name, shifts[name]) for name in TCB_COMPONENTS if name in shifts)


def _reserved_mask(layout: tuple[str | None, ...]) -> int:
    return sum(0xFF << (8 * index) for index, name in enumerate(layout) if name is None)


# Precomputed per family: verifying a report decodes four TCB values, so this is a hot path.
_FIELD_SHIFTS: dict[ProductFamily, tuple[tuple[str, int], ...]] = {
    f: _field_shifts(f.layout) for f in ProductFamily
}
_SHIFTS: dict[ProductFamily, dict[str, int]] = {f: dict(v) for f, v in _FIELD_SHIFTS.items()}
_RESERVED_MASKS: dict[ProductFamily, int] = {f: _reserved_mask(f.layout) for f in ProductFamily}


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """A TCB_VERSION read with its family's layout.

    Attributes:
        family: which layout ``raw`` uses.
        raw: the 64-bit value as it appears (little-endian) in reports.
    """

    family: ProductFamily
    raw: int

    def __post_init__(self) -> None:
        if not 0 <= self.raw <= U64_MAX:
            raise ValueError(f"TCB_VERSION must be a 64-bit unsigned value, got {self.raw}")

    @classmethod
    def from_fields(cls, family: ProductFamily, fields: Mapping[str, int]) -> TcbVersion:
        """Build a TCB_VERSION from named SPLs; components not given are zero.

        Raises:
            ValueError: a component the family does not have, or a value outside 0..255.
        """
        shifts = _SHIFTS[family]
        unknown = set(fields) - set(shifts)
        if unknown:
            raise ValueError(f"{family} TCB has no component {sorted(unknown)}")
        raw = 0
        for name, value in fields.items():
            if not 0 <= value <= 0xFF:
                raise ValueError(f"TCB component {name} must be 0..255, got {value}")
            raw |= value << shifts[name]
        return cls(family, raw)

    def component(self, name: str) -> int:
        """The SPL of one component ("bl", "tee", "snp", "ucode", or "fmc" on Turin).

        Raises:
            KeyError: the family has no such component.
        """
        return (self.raw >> _SHIFTS[self.family][name]) & 0xFF

    @property
    def bl(self) -> int:
        """Boot loader SPL."""
        return self.component("bl")

    @property
    def tee(self) -> int:
        """PSP OS (TEE) SPL."""
        return self.component("tee")

    @property
    def snp(self) -> int:
        """SNP firmware SPL."""
        return self.component("snp")

    @property
    def ucode(self) -> int:
        """Microcode SPL."""
        return self.component("ucode")

    @property
    def fmc(self) -> int | None:
        """Firmware mask ROM (FMC) SPL on Turin; None on earlier families."""
        return self.component("fmc") if self.family is ProductFamily.TURIN else None

    @property
    def reserved_bits(self) -> int:
        """The bits of reserved bytes (zero in every TCB_VERSION AMD firmware has produced)."""
        return self.raw & _RESERVED_MASKS[self.family]

    def fields(self) -> dict[str, int]:
        """Named SPLs in claim order, e.g. ``{"bl": 3, "tee": 0, "snp": 8, "ucode": 115}``."""
        raw = self.raw
        return {name: (raw >> shift) & 0xFF for name, shift in _FIELD_SHIFTS[self.family]}

    def hex(self) -> str:
        """The value as ``0x`` and 16 hex digits, as claims and AMD tools print it."""
        return f"0x{self.raw:016x}"

    def meets(self, minimum: TcbVersion) -> bool:
        """Whether every component is at least *minimum*'s (the usual "minimum TCB" test).

        Raises:
            ValueError: the two values use different families' layouts.
        """
        if minimum.family is not self.family:
            raise ValueError(f"cannot compare a {self.family} TCB with a {minimum.family} TCB")
        return all(
            (self.raw >> shift) & 0xFF >= (minimum.raw >> shift) & 0xFF
            for _, shift in _FIELD_SHIFTS[self.family]
        )

    def __str__(self) -> str:
        parts = " ".join(f"{k}={v}" for k, v in self.fields().items())
        return f"{self.hex()} ({self.family}: {parts})"


def tcb_fields(family: ProductFamily, raw: int) -> dict[str, int]:
    """``TcbVersion(family, raw).fields()`` without building the object (a hot path)."""
    return {name: (raw >> shift) & 0xFF for name, shift in _FIELD_SHIFTS[family]}

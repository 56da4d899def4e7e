"""TCB_VERSION layouts per product family."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.attestation.snp import ProductFamily, TcbVersion
from donjon.attestation.snp.tcb import tcb_fields

# (family, raw, fields): the values of the real samples (manifest "reported_tcb_fields").
_REAL = [
    (ProductFamily.MILAN, 0x4405000000000002, {"bl": 2, "tee": 0, "snp": 5, "ucode": 68}),
    (ProductFamily.MILAN, 0x7308000000000003, {"bl": 3, "tee": 0, "snp": 8, "ucode": 115}),
    (ProductFamily.MILAN, 0xD918000000000004, {"bl": 4, "tee": 0, "snp": 24, "ucode": 217}),
    (ProductFamily.GENOA, 0x541900000000000A, {"bl": 10, "tee": 0, "snp": 25, "ucode": 84}),
    (
        ProductFamily.TURIN,
        0x4700000002000100,
        {"fmc": 0, "bl": 1, "tee": 0, "snp": 2, "ucode": 71},
    ),
]


@pytest.mark.parametrize(("family", "raw", "fields"), _REAL)
def test_real_values_both_ways(family: ProductFamily, raw: int, fields: dict[str, int]) -> None:
    tcb = TcbVersion(family, raw)
    assert tcb.fields() == fields
    assert tcb_fields(family, raw) == fields
    assert list(tcb.fields()) == list(fields)  # claim order
    assert TcbVersion.from_fields(family, fields) == tcb
    assert tcb.hex() == f"0x{raw:016x}"
    assert tcb.reserved_bits == 0
    assert (tcb.bl, tcb.tee, tcb.snp, tcb.ucode) == (
        fields["bl"],
        fields["tee"],
        fields["snp"],
        fields["ucode"],
    )
    assert tcb.fmc == fields.get("fmc")


def test_the_same_value_reads_differently_per_family() -> None:
    raw = 0x4700000002000100  # the Turin sample
    assert TcbVersion(ProductFamily.TURIN, raw).fields()["snp"] == 2
    milan = TcbVersion(ProductFamily.MILAN, raw)
    assert milan.fields() == {"bl": 0, "tee": 1, "snp": 0, "ucode": 0x47}
    assert milan.reserved_bits == 0x0000000002000000  # byte 3 is reserved on Milan


def test_components() -> None:
    assert ProductFamily.MILAN.components == ("bl", "tee", "snp", "ucode")
    assert ProductFamily.GENOA.components == ("bl", "tee", "snp", "ucode")
    assert ProductFamily.TURIN.components == ("fmc", "bl", "tee", "snp", "ucode")
    with pytest.raises(KeyError):
        TcbVersion(ProductFamily.MILAN, 0).component("fmc")


def test_from_fields_errors() -> None:
    with pytest.raises(ValueError, match="no component"):
        TcbVersion.from_fields(ProductFamily.GENOA, {"fmc": 1})
    with pytest.raises(ValueError, match=r"0\.\.255"):
        TcbVersion.from_fields(ProductFamily.GENOA, {"bl": 256})
    with pytest.raises(ValueError, match="64-bit"):
        TcbVersion(ProductFamily.GENOA, 1 << 64)
    with pytest.raises(ValueError, match="64-bit"):
        TcbVersion(ProductFamily.GENOA, -1)


def test_meets() -> None:
    low = TcbVersion.from_fields(ProductFamily.MILAN, {"bl": 3, "tee": 0, "snp": 8, "ucode": 115})
    high = TcbVersion.from_fields(ProductFamily.MILAN, {"bl": 4, "tee": 0, "snp": 24, "ucode": 217})
    assert high.meets(low)
    assert low.meets(low)
    assert not low.meets(high)
    mixed = TcbVersion.from_fields(ProductFamily.MILAN, {"bl": 9, "tee": 0, "snp": 1, "ucode": 255})
    assert not mixed.meets(low)  # every component, not the 64-bit value
    with pytest.raises(ValueError, match="cannot compare"):
        low.meets(TcbVersion(ProductFamily.TURIN, 0))


def test_str() -> None:
    tcb = TcbVersion(ProductFamily.GENOA, 0x541900000000000A)
    assert str(tcb) == "0x541900000000000a (Genoa: bl=10 tee=0 snp=25 ucode=84)"


@pytest.mark.parametrize(
    ("family_id", "model", "family"),
    [
        (0x19, 0x01, ProductFamily.MILAN),
        (0x19, 0x11, ProductFamily.GENOA),
        (0x19, 0xA0, ProductFamily.GENOA),
        (0x1A, 0x02, ProductFamily.TURIN),
        (0x1A, 0x11, ProductFamily.TURIN),
        (0x19, 0x21, None),
        (0x17, 0x31, None),
        (0x00, 0x00, None),
    ],
)
def test_from_cpuid(family_id: int, model: int, family: ProductFamily | None) -> None:
    assert ProductFamily.from_cpuid(family_id, model) is family


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Milan-B0", ProductFamily.MILAN),
        ("Milan", ProductFamily.MILAN),
        ("Genoa", ProductFamily.GENOA),
        ("Turin", ProductFamily.TURIN),
        ("Naples-B0", None),
        ("", None),
    ],
)
def test_from_product_name(name: str, family: ProductFamily | None) -> None:
    assert ProductFamily.from_product_name(name) is family


@given(st.sampled_from(list(ProductFamily)), st.data())
def test_fields_roundtrip(family: ProductFamily, data: st.DataObject) -> None:
    fields = {c: data.draw(st.integers(0, 255)) for c in family.components}
    tcb = TcbVersion.from_fields(family, fields)
    assert tcb.fields() == fields
    assert tcb.reserved_bits == 0
    assert TcbVersion(family, tcb.raw) == tcb

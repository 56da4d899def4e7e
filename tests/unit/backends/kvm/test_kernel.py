"""The kernel package: ar and tar.xz unpacking, .modinfo dependencies, load order, apt output."""

from __future__ import annotations

import io
import lzma
import struct
import tarfile

import pytest

from donjon.backends.kvm.kernel import (
    MICROVM_MODULES,
    KernelPackageError,
    extract_kernel,
    load_order,
    modinfo_depends,
    parse_apt_depends,
    read_ar,
)


def fake_ko(modinfo: bytes) -> bytes:
    """A minimal ELF64 relocatable file with a .modinfo and a .shstrtab section."""
    names = b"\0.modinfo\0.shstrtab\0"
    body = modinfo + names
    shoff = 64 + len(body) + (-(64 + len(body)) % 8)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    elf_header = ident + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)

    def section(name: int, kind: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    sections = (
        section(0, 0, 0, 0)
        + section(1, 1, 64, len(modinfo))
        + section(10, 3, 64 + len(modinfo), len(names))
    )
    return elf_header + body + bytes(shoff - 64 - len(body)) + sections


def modinfo(depends: str) -> bytes:
    return b"license=GPL\0" + b"depends=" + depends.encode() + b"\0" + b"intree=Y\0"


def ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}".encode() + b"`\n"
        out += data + (b"\n" if len(data) % 2 else b"")
    return out


def deb(files: dict[str, bytes], *, xz_modules: bool = False) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:xz") as archive:
        for name, data in files.items():
            if xz_modules and name.endswith(".ko"):
                name, data = name + ".xz", lzma.compress(data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return ar({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": raw.getvalue()})


RELEASE = "6.1.0-50-cloud-amd64"
KERNEL_FILES = {
    f"./boot/vmlinuz-{RELEASE}": b"MZ bzImage",
    f"./boot/config-{RELEASE}": b"CONFIG_VIRTIO=m\n",
    f"./lib/modules/{RELEASE}/kernel/drivers/virtio/virtio_ring.ko": fake_ko(modinfo("")),
    f"./lib/modules/{RELEASE}/kernel/drivers/virtio/virtio.ko": fake_ko(modinfo("virtio_ring")),
    f"./lib/modules/{RELEASE}/kernel/drivers/virtio/virtio_mmio.ko": fake_ko(
        modinfo("virtio,virtio_ring")
    ),
    f"./lib/modules/{RELEASE}/kernel/drivers/char/virtio_console.ko": fake_ko(
        modinfo("virtio,virtio_ring")
    ),
    f"./lib/modules/{RELEASE}/kernel/drivers/block/loop.ko": fake_ko(modinfo("")),
}


@pytest.mark.parametrize("xz_modules", [False, True])
def test_extract_takes_the_kernel_and_the_modules_in_load_order(xz_modules: bool) -> None:
    files = extract_kernel(deb(KERNEL_FILES, xz_modules=xz_modules))
    assert files.version == RELEASE
    assert files.bzimage == b"MZ bzImage"
    assert [name for name, _ in files.modules] == list(MICROVM_MODULES)
    ring = KERNEL_FILES[f"./lib/modules/{RELEASE}/kernel/drivers/virtio/virtio_ring.ko"]
    assert dict(files.modules)["virtio_ring"] == ring  # .ko.xz decompressed


def test_extract_names_a_missing_dependency() -> None:
    files = dict(KERNEL_FILES)
    del files[f"./lib/modules/{RELEASE}/kernel/drivers/virtio/virtio_ring.ko"]
    with pytest.raises(KernelPackageError, match=r"virtio_ring \(needed by virtio\)"):
        extract_kernel(deb(files), wanted=["virtio_console"])


@pytest.mark.parametrize(
    ("blob", "problem"),
    [
        (b"PK\x03\x04", "no ar archive magic"),
        (ar({"debian-binary": b"2.0\n"}), "no data.tar member"),
        (ar({"data.tar.xz": b"not xz at all"}), "cannot read data.tar.xz"),
        (deb({"./usr/share/doc/x": b"doc"}), "not a kernel package"),
    ],
)
def test_extract_refuses_what_is_not_a_kernel_package(blob: bytes, problem: str) -> None:
    with pytest.raises(KernelPackageError, match=problem):
        extract_kernel(blob)


def test_read_ar_members_and_refusals() -> None:
    blob = ar({"a": b"odd", "b": b"even"})
    assert read_ar(blob) == {"a": b"odd", "b": b"even"}
    with pytest.raises(KernelPackageError, match="truncated"):
        read_ar(blob[:-2])
    with pytest.raises(KernelPackageError, match="bad ar member header"):
        read_ar(blob[:8] + b"x" * 60)


def test_modinfo_depends() -> None:
    assert modinfo_depends(fake_ko(modinfo("virtio,virtio_ring"))) == ("virtio", "virtio_ring")
    assert modinfo_depends(fake_ko(modinfo(""))) == ()
    assert modinfo_depends(fake_ko(b"license=GPL\0")) == ()
    with pytest.raises(KernelPackageError, match="not a 64-bit little-endian ELF"):
        modinfo_depends(b"\x7fELF\x01\x01" + bytes(64))
    truncated = fake_ko(modinfo("virtio"))[:-10]
    with pytest.raises(KernelPackageError, match="malformed ELF section table"):
        modinfo_depends(truncated)


def test_load_order_puts_dependencies_first_and_matches_dashes() -> None:
    depends = {
        "a": ("b-c", "d"),
        "b_c": ("d",),
        "d": (),
        "e": ("a",),
    }
    assert load_order(["e"], depends) == ("d", "b_c", "a", "e")
    assert load_order(["d", "a", "d"], depends) == ("d", "b_c", "a")
    with pytest.raises(KernelPackageError, match="x is not in the package"):
        load_order(["x"], depends)
    with pytest.raises(KernelPackageError, match="cycle"):
        load_order(["p"], {"p": ("q",), "q": ("p",)})


def test_parse_apt_depends() -> None:
    output = (
        "linux-image-cloud-amd64\n"
        "  Depends: linux-image-6.1.0-50-cloud-amd64\n"
        "  Recommends: firmware-linux\n"
    )
    assert parse_apt_depends(output) == "linux-image-6.1.0-50-cloud-amd64"
    with pytest.raises(KernelPackageError, match="apt-get update"):
        parse_apt_depends("linux-image-cloud-amd64\n")

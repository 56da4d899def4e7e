"""The guest image, from given inputs: reproducible bytes, the layout /init relies on, the
manifest and the cache's directory rules. (Real builds from this host are in the integration
tests: they need the kernel package.)"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from donjon.backends.kvm.cpio import EntryKind, read_newc
from donjon.backends.kvm.image import (
    GUEST_AGENT,
    GUEST_LIB_DIR,
    GuestFile,
    ImageInputs,
    ImageManifest,
    _elf_interpreter,
    assemble,
    find_image,
    image_root,
    store_image,
)
from donjon.backends.kvm.kernel import KernelFiles
from donjon.backends.kvm.qemu import BASE_CMDLINE
from donjon.errors import KeepLaunchError
from tests.unit.backends.kvm.test_kernel import fake_ko, modinfo

PYTHON = "/opt/python/bin/python3.11"


def inputs(**changes: object) -> ImageInputs:
    ring, virtio = fake_ko(modinfo("")), fake_ko(modinfo("virtio_ring"))
    both = fake_ko(modinfo("virtio,virtio_ring"))
    pci = fake_ko(modinfo("virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio,virtio_ring"))
    kernel = KernelFiles(
        version="6.1.0-50-cloud-amd64",
        bzimage=b"MZ" + bytes(1000),
        modules=(
            ("virtio_ring", ring),
            ("virtio", virtio),
            ("virtio_mmio", both),
            ("virtio_console", both),
            ("virtio_pci_legacy_dev", ring),
            ("virtio_pci_modern_dev", ring),
            ("virtio_pci", pci),
        ),
    )
    base = ImageInputs(
        kernel=kernel,
        kernel_package="linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb",
        kernel_package_sha256="ab" * 32,
        busybox=b"\x7fELF busybox",
        python=PYTHON,
        python_version="3.11.7",
        files=(
            GuestFile(PYTHON.lstrip("/"), b"\x7fELF python", 0o755),
            GuestFile("lib64/ld-linux-x86-64.so.2", b"\x7fELF ld", 0o755),
            GuestFile(f"{GUEST_LIB_DIR}/donjon/__init__.pyc", b"pyc"),
        ),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_same_inputs_give_the_same_bytes_in_any_order() -> None:
    first = assemble(inputs())
    reordered = assemble(inputs(files=tuple(reversed(inputs().files))))
    assert first.initrd == reordered.initrd
    assert first.manifest == reordered.manifest
    assert first.manifest.to_json() == reordered.manifest.to_json()
    changed = assemble(inputs(busybox=b"\x7fELF busybox 2"))
    assert changed.initrd != first.initrd
    assert changed.manifest.image_id != first.manifest.image_id


def test_the_manifest_names_kernel_initrd_and_cmdline_by_digest() -> None:
    built = assemble(inputs())
    m = built.manifest
    assert m.kernel_sha256 == hashlib.sha256(built.kernel).hexdigest()
    assert m.initrd_sha256 == hashlib.sha256(built.initrd).hexdigest()
    assert (m.kernel_bytes, m.initrd_bytes) == (len(built.kernel), len(built.initrd))
    assert m.cmdline == BASE_CMDLINE
    assert m.cmdline_sha256 == hashlib.sha256(BASE_CMDLINE.encode()).hexdigest()
    text = f"donjon-kvm-image/v1\n{m.kernel_sha256}\n{m.initrd_sha256}\n{m.cmdline_sha256}\n"
    assert m.image_id == hashlib.sha256(text.encode()).hexdigest()
    assert m.guest_agent == GUEST_AGENT and m.python_version == "3.11.7"
    assert "tsc_early_khz" not in m.cmdline  # host-specific: added at launch only
    assert ImageManifest.from_json(m.to_json()) == m
    doc = json.loads(m.to_json())
    assert doc["format"] == 1 and doc["modules"][0] == "virtio_ring"


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(initrd_sha256="00" * 32),  # no longer matches image_id
        lambda d: d.update(format=2),
        lambda d: d.pop("cmdline"),
    ],
)
def test_a_damaged_manifest_is_refused(edit: object) -> None:
    doc = json.loads(assemble(inputs()).manifest.to_json())
    edit(doc)  # type: ignore[operator]
    with pytest.raises(KeepLaunchError, match="rebuild it"):
        ImageManifest.from_json(json.dumps(doc).encode())
    with pytest.raises(KeepLaunchError):
        ImageManifest.from_json(b"not json")


def test_the_layout_init_relies_on() -> None:
    entries = {e.path: e for e in read_newc(assemble(inputs()).initrd)}
    console = entries["dev/console"]
    assert (console.kind, console.rdev) == (EntryKind.CHAR_DEVICE, (5, 1))
    assert entries["bin/sh"].kind is EntryKind.SYMLINK and entries["bin/sh"].data == b"busybox"
    assert entries["bin/busybox"].mode == 0o755
    for directory in ("proc", "sys", "dev", "tmp", "run", GUEST_LIB_DIR):
        assert entries[directory].kind is EntryKind.DIRECTORY
    assert entries["lib/modules/virtio_mmio.ko"].data.startswith(b"\x7fELF")
    init = entries["init"]
    assert init.mode == 0o755
    script = init.data.decode()
    assert script.startswith("#!/bin/sh\n")
    assert 'modules="virtio_ring virtio virtio_mmio virtio_console"' in script
    assert (
        'modules="virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci '
        'virtio_console"' in script
    )
    assert "echo 1 > /proc/sys/vm/overcommit_memory" in script
    assert script.rstrip().endswith(
        f"cd /{GUEST_LIB_DIR}\nexec {PYTHON} -S -E -s -B -m {GUEST_AGENT}"
    )


def test_image_root_follows_the_cache_rules(tmp_path: Path) -> None:
    assert image_root({"DONJON_CACHE_DIR": "/c", "HOME": "/h"}) == Path("/c/kvm")
    assert image_root({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/donjon/kvm")
    assert image_root({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == Path("/h/.cache/donjon/kvm")
    assert image_root({"HOME": "/h"}) == Path("/h/.cache/donjon/kvm")


def test_store_is_atomic_and_keeps_an_existing_image(tmp_path: Path) -> None:
    built = assemble(inputs())
    first = store_image(tmp_path, built)
    assert first.directory == tmp_path / "images" / built.manifest.image_id
    assert first.kernel.read_bytes() == built.kernel
    assert first.initrd.read_bytes() == built.initrd
    again = store_image(tmp_path, built)  # a second builder of the same image: no change
    assert again == first
    assert [p.name for p in (tmp_path / "images").iterdir()] == [built.manifest.image_id]
    # Stored but never made current: find_image only trusts a current-*.json pointer.
    assert find_image(tmp_path) is None


def test_elf_interpreter_tells_static_from_dynamic() -> None:
    python = Path(os.path.realpath(sys.executable)).read_bytes()
    interpreter = _elf_interpreter(python)
    assert interpreter is not None and interpreter.startswith("/lib")
    assert _elf_interpreter(b"#!/bin/sh\n") is None
    assert _elf_interpreter(fake_ko(b"")) is None  # no program headers at all

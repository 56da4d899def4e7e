"""The QEMU command line of a ``kvm`` Keep, and the host facts it depends on. Pure.

A Keep is a direct-boot micro-VM: the image's kernel and initramfs (``-kernel``/``-initrd``), one
virtio-serial port to the host (a unix socket the launcher listens on *before* QEMU starts), the
serial console into a log file, and nothing else: ``-nodefaults`` (no NIC, no disk, no display),
``-no-user-config``, ``-no-reboot`` (a guest reboot or panic ends QEMU) and QEMU's seccomp
sandbox.

The accelerator is KVM where ``/dev/kvm`` is hardware-assisted (``-accel kvm -cpu host``) and
QEMU's TCG software emulation otherwise (``-accel tcg -cpu max``). The machine is ``microvm``
(virtio-mmio, no PCI, no firmware) except under TCG without a known TSC frequency: there the
guest kernel cannot calibrate its clock on a microvm (no PIT, HPET or PM timer), so it must be
told the host's TSC rate (``tsc_early_khz``), and without it the Keep falls back to ``q35``
(PCI, HPET, SeaBIOS: slower to start, same guest).

Example:
    >>> parse_tsc_khz("flags : fpu tsc constant_tsc tsc_known_freq\\ncpu MHz : 2445.434\\n")
    2445434
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from donjon.errors import UsageError

__all__ = [
    "BASE_CMDLINE",
    "QEMU_BINARY",
    "Accel",
    "Machine",
    "VmSpec",
    "parse_tsc_khz",
    "qemu_command",
]

QEMU_BINARY = "qemu-system-x86_64"
"""The QEMU that runs x86_64 Keeps (Debian package ``qemu-system-x86``)."""

BASE_CMDLINE = "console=ttyS0 quiet panic=-1 rootfstype=ramfs"
"""The kernel command line every Keep boots with; part of the image's manifest (and of an SEV-SNP
launch measurement later), so it never varies per host. ``quiet``: every console byte costs a VM
exit. ``panic=-1`` with ``-no-reboot``: a panicking guest ends QEMU at once. ``rootfstype=ramfs``:
the initramfs is not capped at half the VM's memory as tmpfs would be."""

MIN_MEMORY_MIB = 192
"""Smallest VM accepted (MiB): the ~70 MB image unpacked, the kernel and two Python processes."""

MAX_MEMORY_MIB = 64 * 1024
"""Largest VM accepted (MiB)."""

_TSC_KHZ_RANGE = (100_000, 10_000_000)  # kHz: any x86 TSC since the 1990s, well within


class Accel(enum.StrEnum):
    """How QEMU runs the guest's instructions."""

    KVM = "kvm"
    """Hardware-assisted virtualization: near-native speed."""
    TCG = "tcg"
    """QEMU's software emulation: works anywhere, about 5x slower for Wasm, ~8 s to boot."""


class Machine(enum.StrEnum):
    """QEMU's machine type."""

    MICROVM = "microvm"
    Q35 = "q35"


@dataclass(frozen=True, slots=True)
class VmSpec:
    """Everything that decides one Keep's QEMU command line.

    Attributes:
        kernel: the bzImage.
        initrd: the initramfs (newc cpio).
        socket: the unix socket the launcher listens on (the guest's ``donjon.0`` port).
        console_log: where the guest's serial console is written.
        accel: KVM or TCG.
        memory_mib: the VM's memory (MiB).
        tsc_khz: the host's TSC frequency (kHz), needed for a microvm under TCG; ``None`` when
            unknown.
        cmdline: the image's kernel command line.
        port_name: the virtio-serial port's name in the guest.
    """

    kernel: Path
    initrd: Path
    socket: Path
    console_log: Path
    accel: Accel
    memory_mib: int
    tsc_khz: int | None
    cmdline: str = BASE_CMDLINE
    port_name: str = "donjon.0"

    @property
    def machine(self) -> Machine:
        """microvm, unless TCG without a TSC frequency (see the module docstring)."""
        if self.accel is Accel.TCG and self.tsc_khz is None:
            return Machine.Q35
        return Machine.MICROVM


def qemu_command(spec: VmSpec, *, qemu: str = QEMU_BINARY, sandbox: bool = True) -> list[str]:
    """The QEMU argv for *spec*.

    Args:
        spec: the VM.
        qemu: the QEMU executable.
        sandbox: pass ``-sandbox on`` (QEMU's seccomp filter: no exec, no privilege changes);
            off only for a QEMU built without seccomp support.

    Raises:
        UsageError: a memory size outside :data:`MIN_MEMORY_MIB`..:data:`MAX_MEMORY_MIB`, or a
            path QEMU's option syntax cannot carry (a comma).
    """
    if not MIN_MEMORY_MIB <= spec.memory_mib <= MAX_MEMORY_MIB:
        raise UsageError(
            f"a kvm Keep needs {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB} MiB of memory, not "
            f"{spec.memory_mib}"
        )
    for path in (spec.kernel, spec.initrd, spec.socket, spec.console_log):
        if "," in str(path):  # QEMU splits option values at commas
            raise UsageError(f"QEMU cannot be given a path with a comma: {path}")
    cmdline = spec.cmdline
    if spec.machine is Machine.MICROVM:
        # No PIT or PIC, no option ROMs: the smallest device model; virtio-mmio devices are
        # found through microvm's ACPI tables. The ISA serial port stays, for the console, and
        # the RTC, so the guest (and the workload's realtime clock) starts at the right time.
        machine = "microvm,x-option-roms=off,pit=off,pic=off"
        serial_bus = "virtio-serial-device"
        if spec.accel is Accel.TCG and spec.tsc_khz is not None:
            # Host-specific, so it is added here and never part of the image's measured cmdline.
            cmdline = f"{cmdline} tsc_early_khz={spec.tsc_khz}"
    else:
        machine = "q35"
        serial_bus = "virtio-serial-pci"
    cpu = "host" if spec.accel is Accel.KVM else "max"
    argv = [
        qemu,
        "-name",
        "donjon-keep",
        "-machine",
        machine,
        "-accel",
        str(spec.accel),
        "-cpu",
        cpu,
        "-m",
        str(spec.memory_mib),
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        f"file:{spec.console_log}",
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initrd),
        "-append",
        cmdline,
        "-device",
        serial_bus,
        "-chardev",
        f"socket,id=donjon,path={spec.socket}",
        "-device",
        f"virtserialport,chardev=donjon,name={spec.port_name}",
    ]
    if sandbox:
        argv += [
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]
    return argv


_MHZ = re.compile(r"^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$", re.MULTILINE)
_FLAGS = re.compile(r"^flags\s*:(.*)$", re.MULTILINE)
_DETECTED = re.compile(r"tsc: Detected ([0-9]+(?:\.[0-9]+)?) MHz")
_REFINED = re.compile(r"tsc: Refined TSC clocksource calibration: ([0-9]+(?:\.[0-9]+)?) MHz")


def parse_tsc_khz(
    cpuinfo: str, *, sysfs_khz: str | None = None, kernel_log: str | None = None
) -> int | None:
    """The host's TSC frequency in kHz, from what an unprivileged process can read.

    Args:
        cpuinfo: ``/proc/cpuinfo``.
        sysfs_khz: ``/sys/devices/system/cpu/cpu0/tsc_freq_khz`` where a kernel has it.
        kernel_log: ``dmesg`` output, where readable (``tsc: Detected ... MHz``).

    Returns:
        The frequency, or ``None`` when no source gives a trustworthy one.

    Sources, best first: the sysfs file; the kernel log's calibration (the refined value wins);
    and ``cpu MHz`` of ``/proc/cpuinfo``, which is the TSC rate only when the TSC is constant
    and the kernel has no other notion of the current frequency: with ``tsc_known_freq`` (a
    hypervisor or CPUID told it), or without ``aperfmperf`` (then ``cpu MHz`` is ``tsc_khz``).
    """
    if sysfs_khz is not None and sysfs_khz.strip().isdigit():
        return _plausible(int(sysfs_khz.strip()))
    if kernel_log:
        found = _REFINED.findall(kernel_log) or _DETECTED.findall(kernel_log)
        value = found[-1] if found else None
        if value is not None:
            return _plausible(round(float(value) * 1000))
    flags_match = _FLAGS.search(cpuinfo)
    mhz_match = _MHZ.search(cpuinfo)
    if flags_match is None or mhz_match is None:
        return None
    flags = set(flags_match.group(1).split())
    if "constant_tsc" not in flags:
        return None
    if "tsc_known_freq" not in flags and "aperfmperf" in flags:
        return None  # cpu MHz is then the current clock, not the TSC's
    return _plausible(round(float(mhz_match.group(1)) * 1000))


def _plausible(khz: int) -> int | None:
    low, high = _TSC_KHZ_RANGE
    return khz if low <= khz <= high else None

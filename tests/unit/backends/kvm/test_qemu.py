"""The QEMU command line and the host's TSC frequency: pure functions, exact outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from donjon.backends.kvm.qemu import (
    BASE_CMDLINE,
    Accel,
    Machine,
    VmSpec,
    parse_tsc_khz,
    qemu_command,
)
from donjon.errors import UsageError

D = Path("/tmp/donjon-kvm-x")


def spec(accel: Accel, tsc_khz: int | None, memory_mib: int = 256) -> VmSpec:
    return VmSpec(
        kernel=Path("/c/images/i/vmlinuz"),
        initrd=Path("/c/images/i/initrd.cpio"),
        socket=D / "keep.sock",
        console_log=D / "console.log",
        accel=accel,
        memory_mib=memory_mib,
        tsc_khz=tsc_khz,
    )


COMMON = [
    "-m",
    "256",
    "-smp",
    "1",
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-serial",
    f"file:{D}/console.log",
    "-kernel",
    "/c/images/i/vmlinuz",
    "-initrd",
    "/c/images/i/initrd.cpio",
    "-append",
]
TAIL = [
    "-chardev",
    f"socket,id=donjon,path={D}/keep.sock",
    "-device",
    "virtserialport,chardev=donjon,name=donjon.0",
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
]
MICROVM = "microvm,x-option-roms=off,pit=off,pic=off"


def test_tcg_microvm_gets_the_hosts_tsc_frequency() -> None:
    argv = qemu_command(spec(Accel.TCG, 2445434))
    assert argv == [
        "qemu-system-x86_64",
        "-name",
        "donjon-keep",
        "-machine",
        MICROVM,
        "-accel",
        "tcg",
        "-cpu",
        "max",
        *COMMON,
        f"{BASE_CMDLINE} tsc_early_khz=2445434",
        "-device",
        "virtio-serial-device",
        *TAIL,
    ]


def test_kvm_microvm_uses_the_host_cpu_and_the_image_cmdline_unchanged() -> None:
    argv = qemu_command(spec(Accel.KVM, 2445434), qemu="/opt/qemu/bin/qemu-system-x86_64")
    assert argv[:9] == [
        "/opt/qemu/bin/qemu-system-x86_64",
        "-name",
        "donjon-keep",
        "-machine",
        MICROVM,
        "-accel",
        "kvm",
        "-cpu",
        "host",
    ]
    assert argv[argv.index("-append") + 1] == BASE_CMDLINE
    assert spec(Accel.KVM, None).machine is Machine.MICROVM


def test_tcg_without_a_tsc_frequency_falls_back_to_q35_over_pci() -> None:
    argv = qemu_command(spec(Accel.TCG, None), sandbox=False)
    assert argv[argv.index("-machine") + 1] == "q35"
    assert argv[argv.index("-append") + 1] == BASE_CMDLINE
    assert "virtio-serial-pci" in argv and "virtio-serial-device" not in argv
    assert "-sandbox" not in argv


def test_no_network_device_ever() -> None:
    for accel, tsc in ((Accel.TCG, 1_000_000), (Accel.TCG, None), (Accel.KVM, None)):
        argv = qemu_command(spec(accel, tsc))
        assert "-nodefaults" in argv
        assert not {"-net", "-nic", "-netdev"} & set(argv)
        assert not any("net" in a or "vsock" in a for a in argv if a.startswith("virtio"))


@pytest.mark.parametrize("memory_mib", [191, 64 * 1024 + 1])
def test_memory_out_of_range_is_refused(memory_mib: int) -> None:
    with pytest.raises(UsageError, match="MiB of memory"):
        qemu_command(spec(Accel.TCG, 1_000_000, memory_mib))


def test_a_comma_in_a_path_is_refused() -> None:
    bad = VmSpec(
        kernel=Path("/a,b/vmlinuz"),
        initrd=Path("/i"),
        socket=Path("/s"),
        console_log=Path("/l"),
        accel=Accel.TCG,
        memory_mib=256,
        tsc_khz=None,
    )
    with pytest.raises(UsageError, match="comma"):
        qemu_command(bad)


VM_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: 2445.434
flags\t\t: fpu tsc rdtscp constant_tsc nonstop_tsc tsc_known_freq hypervisor

processor\t: 1
cpu MHz\t\t: 1200.000
"""
BARE_METAL_CPUINFO = """\
processor\t: 0
cpu MHz\t\t: 1397.212
flags\t\t: fpu tsc constant_tsc nonstop_tsc aperfmperf
"""


@pytest.mark.parametrize(
    ("cpuinfo", "sysfs", "log", "khz"),
    [
        (VM_CPUINFO, None, None, 2445434),  # this project's machines
        (VM_CPUINFO.replace(" tsc_known_freq", ""), None, None, 2445434),  # no aperfmperf
        (BARE_METAL_CPUINFO, None, None, None),  # cpu MHz is the current clock there
        (VM_CPUINFO.replace(" constant_tsc", ""), None, None, None),
        (BARE_METAL_CPUINFO, "2994370\n", None, 2994370),
        (BARE_METAL_CPUINFO, None, "[0.0] tsc: Detected 2994.370 MHz processor\n", 2994370),
        (
            BARE_METAL_CPUINFO,
            None,
            "[0.0] tsc: Detected 2994.000 MHz processor\n"
            "[1.2] tsc: Refined TSC clocksource calibration: 2994.371 MHz\n",
            2994371,
        ),
        (
            BARE_METAL_CPUINFO,
            None,
            "dmesg: read kernel buffer failed: Operation not permitted",
            None,
        ),
        ("", None, None, None),
        (VM_CPUINFO.replace("2445.434", "2.5"), None, None, None),  # implausible
        (VM_CPUINFO, "garbage", None, 2445434),
    ],
)
def test_parse_tsc_khz(cpuinfo: str, sysfs: str | None, log: str | None, khz: int | None) -> None:
    assert parse_tsc_khz(cpuinfo, sysfs_khz=sysfs, kernel_log=log) == khz

"""Backend probes against fake machine trees under tmp_path, and once against this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from donjon.backends.host_view import HostView, ModuleInfo
from donjon.backends.probe import (
    BACKENDS,
    BackendReport,
    Check,
    CheckGroup,
    Mode,
    best_available,
    host_summary,
    parse_cpuinfo,
    probe_all,
)
from donjon.errors import BackendUnavailableError

AMD_VM_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 avx2 hypervisor rdrand fsgsbase

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 avx2 hypervisor rdrand fsgsbase svm sev_snp
"""

AMD_SNP_HOST_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 svm sme sev sev_es sev_snp
"""

INTEL_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 vmx sgx sgx_lc tdx_host_platform
"""

TDX_GUEST_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 hypervisor tdx_guest
"""

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
CPU part\t: 0xd4f
"""

WASMTIME_OK = ModuleInfo("wasmtime", "50.0.1", None)


def machine(
    tmp_path: Path,
    files: dict[str, str],
    *,
    dirs: tuple[str, ...] = (),
    executables: tuple[str, ...] = (),
    arch: str = "x86_64",
    wasmtime: ModuleInfo = WASMTIME_OK,
) -> HostView:
    """A fake machine: files with contents, directories, and executables under tmp_path."""
    for path, text in files.items():
        real = tmp_path / path.lstrip("/")
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_text(text)
    for path in dirs:
        (tmp_path / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for path in executables:
        real = tmp_path / path.lstrip("/")
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_text("#!/bin/sh\n")
        real.chmod(0o755)
    return HostView(
        root=tmp_path,
        machine=arch,
        search_path="/usr/local/bin:/usr/bin",
        module_probe=lambda name: wasmtime,
    )


def by_name(reports: tuple[BackendReport, ...]) -> dict[str, BackendReport]:
    return {r.name: r for r in reports}


def check(report: BackendReport, suffix: str) -> Check:
    return next(c for c in report.checks if c.id == f"{report.name}.{suffix}")


def test_this_machine_kind_pvm_kvm_and_no_tee(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {"/proc/cpuinfo": AMD_VM_CPUINFO, "/dev/kvm": "", "/proc/sys/kernel/osrelease": "6.18\n"},
        dirs=("/sys/module/kvm_pvm/parameters",),
    )
    reports = by_name(probe_all(view))
    assert tuple(reports) == BACKENDS
    assert reports["nil"].usable and reports["nil"].mode is Mode.PROCESS
    kvm = reports["kvm"]
    assert not kvm.usable and kvm.mode is None
    assert check(kvm, "kvm_device").ok and check(kvm, "kvm_access").ok
    hardware = check(kvm, "hardware")
    assert not hardware.ok and "PVM" in hardware.detail and "stock guest kernel" in hardware.detail
    assert "TCG" in hardware.fix
    assert not check(kvm, "qemu").ok
    assert "apt-get install qemu-system-x86" in check(kvm, "qemu").fix
    snp = reports["sev-snp"]
    # Only the first processor block counts: the second one's sev_snp flag is ignored.
    flag = check(snp, "cpu_sev_snp")
    assert not flag.ok and "itself a virtual machine" in flag.fix
    assert not any(r.usable for r in reports.values() if r.confidential)
    assert best_available(tuple(reports.values())) == "nil"
    summary = host_summary(view)
    assert (summary.machine, summary.kernel, summary.cpu, summary.in_vm) == (
        "x86_64",
        "6.18",
        "AMD EPYC",
        True,
    )


def test_hardware_kvm_host_with_qemu_prefers_kvm_over_nil(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {"/proc/cpuinfo": AMD_SNP_HOST_CPUINFO, "/dev/kvm": ""},
        dirs=("/sys/module/kvm_amd/parameters",),
        executables=("/usr/bin/qemu-system-x86_64",),
    )
    reports = probe_all(view)
    kvm = by_name(reports)["kvm"]
    assert kvm.usable and kvm.mode is Mode.HOST and not kvm.confidential
    assert check(kvm, "hardware").detail.startswith("hardware-assisted (kvm_amd")
    assert check(kvm, "qemu").detail == "/usr/bin/qemu-system-x86_64"
    assert best_available(reports) == "kvm"


def test_sev_snp_host(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {
            "/proc/cpuinfo": AMD_SNP_HOST_CPUINFO,
            "/dev/kvm": "",
            "/dev/sev": "",
            "/sys/module/kvm_amd/parameters/sev_snp": "Y\n",
        },
        executables=("/usr/local/bin/qemu-system-x86_64",),
    )
    reports = probe_all(view)
    snp = by_name(reports)["sev-snp"]
    assert snp.usable and snp.mode is Mode.HOST and snp.confidential
    assert all(c.ok for c in snp.checks if c.group is CheckGroup.HOST)
    assert not check(snp, "guest_device").ok
    assert best_available(reports) == "sev-snp"


def test_sev_snp_host_with_parameter_off_says_how_to_enable_it(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {
            "/proc/cpuinfo": AMD_SNP_HOST_CPUINFO,
            "/dev/kvm": "",
            "/sys/module/kvm_amd/parameters/sev_snp": "N\n",
        },
    )
    snp = by_name(probe_all(view))["sev-snp"]
    param = check(snp, "kvm_amd_sev_snp")
    assert not param.ok and param.detail == "sev_snp=N" and "sev_snp=1" in param.fix
    assert check(snp, "sev_device").detail == "absent"
    assert not snp.usable


@pytest.mark.parametrize(
    ("extra", "interface"),
    [({"/sys/kernel/config/tsm/report/": None}, "configfs-tsm"), ({}, "SNP_GET_REPORT ioctl")],
)
def test_sev_snp_guest(tmp_path: Path, extra: dict[str, None], interface: str) -> None:
    view = machine(
        tmp_path,
        {"/proc/cpuinfo": AMD_VM_CPUINFO, "/dev/sev-guest": ""},
        dirs=tuple(extra),
    )
    reports = probe_all(view)
    snp = by_name(reports)["sev-snp"]
    assert snp.usable and snp.mode is Mode.GUEST
    assert interface in check(snp, "guest_evidence").detail
    assert best_available(reports) == "sev-snp"


def test_tdx_guest_needs_configfs_tsm_for_a_quote(tmp_path: Path) -> None:
    without = machine(tmp_path / "a", {"/proc/cpuinfo": TDX_GUEST_CPUINFO, "/dev/tdx_guest": ""})
    tdx = by_name(probe_all(without))["tdx"]
    assert (
        check(tdx, "guest").ok
        and "tdx_guest CPU flag and /dev/tdx_guest" in check(tdx, "guest").detail
    )
    tsm = check(tdx, "tsm")
    assert not tsm.ok and "QGS" in tsm.fix and "TDREPORT" in tsm.fix
    assert not tdx.usable

    with_tsm = machine(
        tmp_path / "b",
        {"/proc/cpuinfo": TDX_GUEST_CPUINFO},
        dirs=("/sys/kernel/config/tsm/report",),
    )
    reports = probe_all(with_tsm)
    assert by_name(reports)["tdx"].mode is Mode.GUEST
    assert best_available(reports) == "tdx"


def test_tdx_host(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {
            "/proc/cpuinfo": INTEL_CPUINFO,
            "/dev/kvm": "",
            "/sys/module/kvm_intel/parameters/tdx": "1\n",
        },
        executables=("/usr/bin/qemu-system-x86_64",),
    )
    tdx = by_name(probe_all(view))["tdx"]
    assert tdx.usable and tdx.mode is Mode.HOST


def test_sgx_needs_every_piece_and_names_the_missing_one(tmp_path: Path) -> None:
    files = {
        "/proc/cpuinfo": INTEL_CPUINFO,
        "/dev/sgx_enclave": "",
        "/dev/sgx_provision": "",
        "/var/run/aesmd/aesm.socket": "",
    }
    without_gramine = by_name(probe_all(machine(tmp_path / "a", files)))["sgx"]
    assert not without_gramine.usable
    failing = [c for c in without_gramine.checks if not c.ok]
    assert [c.id for c in failing] == ["sgx.gramine"]
    assert "gramine.readthedocs.io" in failing[0].fix

    full = probe_all(machine(tmp_path / "b", files, executables=("/usr/bin/gramine-sgx",)))
    sgx = by_name(full)["sgx"]
    assert sgx.usable and sgx.mode is Mode.HOST
    assert best_available(full) == "sgx"


def test_arm_cca_realm(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {"/proc/cpuinfo": ARM_CPUINFO},
        dirs=("/sys/bus/platform/devices/arm-cca-dev", "/sys/kernel/config/tsm/report"),
        arch="aarch64",
    )
    reports = by_name(probe_all(view))
    cca = reports["cca"]
    assert cca.usable and cca.mode is Mode.GUEST
    assert not check(cca, "rme").ok  # donjon never claims it can create Realms
    assert check(reports["sev-snp"], "cpu_vendor").detail == "aarch64: not an x86_64 machine"


def test_arm_kvm_host_is_hardware_and_wants_the_aarch64_qemu(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {"/proc/cpuinfo": ARM_CPUINFO, "/dev/kvm": ""},
        executables=("/usr/bin/qemu-system-aarch64",),
        arch="aarch64",
    )
    kvm = by_name(probe_all(view))["kvm"]
    assert kvm.usable
    assert check(kvm, "qemu").name == "qemu-system-aarch64 installed"


def test_broken_wasmtime_makes_nothing_usable(tmp_path: Path) -> None:
    broken = ModuleInfo("wasmtime", "50.0.1", "OSError: libwasmtime.so: cannot open")
    view = machine(
        tmp_path,
        {"/proc/cpuinfo": AMD_VM_CPUINFO, "/dev/sev-guest": ""},
        wasmtime=broken,
    )
    reports = probe_all(view)
    nil = by_name(reports)["nil"]
    assert not nil.usable and "libwasmtime.so" in check(nil, "wasmtime").detail
    assert not by_name(reports)["sev-snp"].usable  # the keep runtime cannot run in the guest
    with pytest.raises(BackendUnavailableError, match="donjon platform info"):
        best_available(reports)


def test_wrong_wasmtime_major_is_refused(tmp_path: Path) -> None:
    view = machine(tmp_path, {}, wasmtime=ModuleInfo("wasmtime", "49.0.0", None))
    nil = by_name(probe_all(view))["nil"]
    assert not nil.usable
    assert check(nil, "wasmtime").detail == "wasmtime 49.0.0; donjon needs 50.x"


def test_empty_machine_explains_unreadable_cpuinfo(tmp_path: Path) -> None:
    reports = by_name(probe_all(machine(tmp_path, {})))
    assert check(reports["sgx"], "cpu_vendor").detail == "/proc/cpuinfo unreadable"
    assert check(reports["kvm"], "kvm_device").detail == "absent"
    assert check(reports["kvm"], "kvm_access").detail == "absent"
    assert [n for n, r in reports.items() if r.usable] == ["nil"]


def test_a_kvm_node_that_does_not_open_reports_the_os_reason(tmp_path: Path) -> None:
    view = machine(tmp_path, {}, dirs=("/dev/kvm",))  # a directory: open(O_RDWR) -> EISDIR
    kvm = by_name(probe_all(view))["kvm"]
    access = check(kvm, "kvm_access")
    assert not access.ok and access.detail == "no: Is a directory"
    assert "usermod -aG kvm" in access.fix


def test_probes_only_read(tmp_path: Path) -> None:
    view = machine(
        tmp_path,
        {"/proc/cpuinfo": AMD_VM_CPUINFO, "/dev/kvm": "", "/dev/sev-guest": ""},
        dirs=("/sys/kernel/config/tsm/report", "/sys/module/kvm_pvm"),
    )

    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(tmp_path)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(tmp_path.rglob("*"))
        }

    before = snapshot()
    probe_all(view)
    host_summary(view)
    assert snapshot() == before
    assert list((tmp_path / "sys/kernel/config/tsm/report").iterdir()) == []


def test_report_json_shape_and_unique_ids(tmp_path: Path) -> None:
    reports = probe_all(machine(tmp_path, {"/proc/cpuinfo": AMD_VM_CPUINFO}))
    doc = json.loads(json.dumps([r.to_json() for r in reports]))
    for backend in doc:
        assert set(backend) == {"name", "usable", "confidential", "mode", "summary", "checks"}
        ids = [c["id"] for c in backend["checks"]]
        assert len(ids) == len(set(ids))
        for c in backend["checks"]:
            assert set(c) == {"id", "name", "group", "ok", "detail", "fix"}
            assert c["group"] in {"runtime", "host", "guest"}
            if c["ok"]:
                assert c["fix"] == ""
            else:
                assert c["fix"], f"{c['id']} fails without saying how to fix it"
    assert [b["confidential"] for b in doc] == [False, False, True, True, True, True]


def test_parse_cpuinfo_layouts() -> None:
    x86 = parse_cpuinfo(INTEL_CPUINFO)
    assert x86.vendor == "GenuineIntel" and "sgx_lc" in x86.flags and not x86.in_vm
    arm = parse_cpuinfo(ARM_CPUINFO)
    assert arm.vendor == "0x41" and arm.model == "" and "atomics" in arm.flags
    empty = parse_cpuinfo("")
    assert (empty.vendor, empty.model, empty.flags) == ("", "", frozenset())


def test_host_view_reads_are_bounded_and_which_ignores_relative_and_non_executables(
    tmp_path: Path,
) -> None:
    (tmp_path / "big").write_text("x" * 100)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("not executable")
    view = HostView(root=tmp_path, search_path="bin:/bin")
    assert view.read_text("/big", max_bytes=10) == "x" * 10
    assert view.read_text("/missing") is None
    assert view.which("tool") is None
    (tmp_path / "bin" / "tool").chmod(0o755)
    assert view.which("tool") == "/bin/tool"
    assert view.path("/dev/kvm") == tmp_path / "dev" / "kvm"


def test_this_machine(tmp_path: Path) -> None:
    """The real probes once, for real: nil works here (wasmtime is installed)."""
    view = HostView(search_path=os.environ.get("PATH", "/usr/bin:/bin"))
    reports = by_name(probe_all(view))
    assert tuple(reports) == BACKENDS
    assert reports["nil"].usable
    assert best_available(tuple(reports.values())) in BACKENDS
    if os.path.exists("/sys/module/kvm_pvm") and not os.path.exists("/sys/module/kvm_amd"):
        assert "PVM" in check(reports["kvm"], "hardware").detail
        assert not reports["kvm"].usable

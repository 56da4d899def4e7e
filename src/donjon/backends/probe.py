"""Which Keep backends can run on this machine, and why not: the checks behind ``platform info``.

Rule 1: probes only read. They open device nodes to test access (no side effect) but never
create a configfs-tsm report entry, load a module or start a VM.
Rule 2: every check is pure logic over a :class:`HostView`, so tests run each one against a fake
tree, and each failing check says how to fix it.
Rule 3: a backend is *usable* when all its ``runtime`` checks pass and either all its ``host``
checks pass (donjon can create that kind of TEE here) or all its ``guest`` checks pass (this
machine *is* that kind of TEE, so a Keep can run right here and get hardware evidence).

Example:
    >>> from donjon.backends.probe import HostView, best_available, probe_all
    >>> reports = probe_all(HostView())
    >>> best_available(reports) in {"nil", "kvm", "sev-snp", "tdx", "sgx", "cca"}
    True
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from donjon.backends.host_view import HostView, ModuleInfo
from donjon.errors import BackendUnavailableError

BACKENDS = ("nil", "kvm", "sev-snp", "tdx", "sgx", "cca")
"""Every backend donjon knows, in ``platform info`` order."""

PREFERENCE = ("sev-snp", "tdx", "cca", "sgx", "kvm", "nil")
"""Automatic choice order: confidential VMs first, then SGX, then the insecure backends."""

WASMTIME_MAJOR = 50
"""The wasmtime major version donjon is written against (its Python API changes per major)."""

TSM_REPORT_DIR = "/sys/kernel/config/tsm/report"
"""Linux configfs-tsm report interface (Documentation/ABI/testing/configfs-tsm, kernel >= 6.7)."""

_CONFIDENTIAL = frozenset({"sev-snp", "tdx", "sgx", "cca"})


class CheckGroup(enum.StrEnum):
    """What a check is a prerequisite for."""

    RUNTIME = "runtime"
    """Needed whichever way the backend runs (the keep runtime's Python side)."""
    HOST = "host"
    """Needed to create this kind of TEE on this machine."""
    GUEST = "guest"
    """True when this machine already is this kind of TEE."""


class Mode(enum.StrEnum):
    """How a usable backend would run a Keep here."""

    PROCESS = "process"
    """A sandboxed host process (``nil``)."""
    HOST = "host"
    """donjon creates the TEE (a VM or an enclave) on this machine."""
    GUEST = "guest"
    """This machine is the TEE; the Keep runs inside it and gets evidence from its kernel."""


@dataclass(frozen=True, slots=True)
class Check:
    """One prerequisite and whether it holds.

    Attributes:
        id: stable dotted name for scripts (``kvm.device``).
        name: what is checked, for people.
        ok: whether it holds.
        detail: what was found.
        fix: how to make it hold (empty when it holds).
        group: what the check is a prerequisite for.
    """

    id: str
    name: str
    ok: bool
    detail: str
    fix: str
    group: CheckGroup

    def to_json(self) -> dict[str, Any]:
        """The check as a JSON object (schema in docs/commands/platform.md)."""
        return {
            "id": self.id,
            "name": self.name,
            "group": str(self.group),
            "ok": self.ok,
            "detail": self.detail,
            "fix": "" if self.ok else self.fix,
        }


@dataclass(frozen=True, slots=True)
class BackendReport:
    """Whether one backend can run here.

    Attributes:
        name: the backend (``nil``, ``kvm``, ``sev-snp``, ``tdx``, ``sgx``, ``cca``).
        confidential: whether it protects the workload from the host at all.
        summary: one line on what it isolates and from whom.
        checks: every check, runtime first, then host, then guest.
        usable: see Rule 3.
        mode: how it would run here when usable, else None.
    """

    name: str
    confidential: bool
    summary: str
    checks: tuple[Check, ...]
    usable: bool
    mode: Mode | None

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (schema in docs/commands/platform.md)."""
        return {
            "name": self.name,
            "usable": self.usable,
            "confidential": self.confidential,
            "mode": None if self.mode is None else str(self.mode),
            "summary": self.summary,
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """The first processor block of /proc/cpuinfo.

    Attributes:
        vendor: ``AuthenticAMD``, ``GenuineIntel``, an Arm implementer code, or "".
        model: the model name, or "".
        flags: x86 ``flags`` or arm64 ``Features``.
    """

    vendor: str
    model: str
    flags: frozenset[str]

    @property
    def in_vm(self) -> bool:
        """Whether the CPU says a hypervisor runs this machine (x86 ``hypervisor`` flag)."""
        return "hypervisor" in self.flags


@dataclass(frozen=True, slots=True)
class HostSummary:
    """What machine this is, for the header of ``platform info``."""

    machine: str
    kernel: str
    cpu: str
    in_vm: bool

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "kernel": self.kernel, "cpu": self.cpu, "vm": self.in_vm}


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the first processor block of /proc/cpuinfo (x86 or arm64 layout)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the end of the first processor block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    vendor = fields.get("vendor_id") or fields.get("CPU implementer", "")
    model = fields.get("model name") or fields.get("Model name", "")
    flags = fields.get("flags") or fields.get("Features", "")
    return CpuInfo(vendor=vendor, model=model, flags=frozenset(flags.split()))


def host_summary(view: HostView) -> HostSummary:
    """The machine, kernel and CPU, as seen through *view*."""
    cpu = parse_cpuinfo(view.read_text("/proc/cpuinfo") or "")
    kernel = (view.read_text("/proc/sys/kernel/osrelease") or "").strip() or "unknown"
    return HostSummary(view.machine, kernel, cpu.model or cpu.vendor or "unknown", cpu.in_vm)


def probe_all(view: HostView) -> tuple[BackendReport, ...]:
    """Run every backend's checks through *view*, in :data:`BACKENDS` order."""
    facts = _Facts.gather(view)
    return (
        _nil(facts),
        _kvm(facts),
        _sev_snp(facts),
        _tdx(facts),
        _sgx(facts),
        _cca(facts),
    )


def hardware_kvm(view: HostView) -> bool:
    """Whether ``/dev/kvm`` here is hardware-assisted KVM that opens read-write, so a stock guest
    kernel boots under ``-accel kvm`` (not PVM, whose guests need a PVM-enlightened kernel)."""
    if not view.exists("/dev/kvm") or view.open_error("/dev/kvm") is not None:
        return False
    kind, _ = _kvm_kind(view)
    return kind in {"amd", "intel", "arm"}


def best_available(reports: Sequence[BackendReport]) -> str:
    """The best usable backend, by :data:`PREFERENCE`.

    Raises:
        BackendUnavailableError: no backend is usable (not even ``nil``: wasmtime is broken).
    """
    usable = {r.name for r in reports if r.usable}
    for name in PREFERENCE:
        if name in usable:
            return name
    raise BackendUnavailableError(
        "no Keep backend can run on this machine; run `donjon platform info` to see each "
        "check and how to fix it"
    )


# --- the checks ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
    """Everything the checks read, gathered once."""

    view: HostView
    cpu: CpuInfo
    cpuinfo_found: bool
    wasmtime: ModuleInfo
    kvm_open_error: str | None
    tsm: bool

    @classmethod
    def gather(cls, view: HostView) -> _Facts:
        text = view.read_text("/proc/cpuinfo")
        kvm_error = view.open_error("/dev/kvm") if view.exists("/dev/kvm") else "absent"
        return cls(
            view=view,
            cpu=parse_cpuinfo(text or ""),
            cpuinfo_found=text is not None,
            wasmtime=view.module_probe("wasmtime"),
            kvm_open_error=kvm_error,
            tsm=view.is_dir(TSM_REPORT_DIR),
        )

    @property
    def x86(self) -> bool:
        return self.view.machine in {"x86_64", "amd64"}

    def vm_note(self) -> str:
        if self.cpu.in_vm:
            return (
                " This machine is itself a virtual machine (hypervisor flag set); "
                "its hypervisor does not expose this feature to it."
            )
        return ""


def _check(
    id: str, name: str, ok: bool, detail: str, fix: str, group: CheckGroup
) -> Check:  # keeps each check on one readable call
    return Check(id=id, name=name, ok=ok, detail=detail, fix=fix, group=group)


def _report(
    name: str, summary: str, checks: list[Check], *, process: bool = False
) -> BackendReport:
    def passed(group: CheckGroup) -> bool | None:
        members = [c for c in checks if c.group is group]
        return all(c.ok for c in members) if members else None

    runtime, host, guest = (passed(g) for g in CheckGroup)
    mode: Mode | None = None
    if runtime is not False:
        if process:
            mode = Mode.PROCESS
        elif host:
            mode = Mode.HOST
        elif guest:
            mode = Mode.GUEST
    return BackendReport(
        name=name,
        confidential=name in _CONFIDENTIAL,
        summary=summary,
        checks=tuple(sorted(checks, key=lambda c: list(CheckGroup).index(c.group))),
        usable=mode is not None,
        mode=mode,
    )


def _wasmtime_check(facts: _Facts, backend: str, group: CheckGroup) -> Check:
    info = facts.wasmtime
    fix = f"install donjon's pinned wasmtime ({WASMTIME_MAJOR}.x): `pip install donjon` pulls it in"
    if info.error is not None:
        return _check(f"{backend}.wasmtime", "wasmtime importable", False, info.error, fix, group)
    version = info.version or "unknown version"
    ok = info.version is not None and info.version.split(".")[0] == str(WASMTIME_MAJOR)
    detail = f"wasmtime {version}" + ("" if ok else f"; donjon needs {WASMTIME_MAJOR}.x")
    return _check(f"{backend}.wasmtime", "wasmtime importable", ok, detail, fix, group)


def _kvm_device_checks(facts: _Facts, backend: str) -> list[Check]:
    view = facts.view
    present = view.exists("/dev/kvm")
    device = _check(
        f"{backend}.kvm_device",
        "/dev/kvm present",
        present,
        "present" if present else "absent",
        "enable virtualization (AMD-V / VT-x) in the firmware and load kvm_amd or kvm_intel."
        + facts.vm_note(),
        CheckGroup.HOST,
    )
    access = _check(
        f"{backend}.kvm_access",
        "/dev/kvm opens read-write",
        present and facts.kvm_open_error is None,
        _open_detail(facts.kvm_open_error),
        "add your user to the kvm group (`sudo usermod -aG kvm $USER`, then log in again)",
        CheckGroup.HOST,
    )
    return [device, access]


def _open_detail(error: str | None) -> str:
    if error is None:
        return "yes"
    return error if error == "absent" else f"no: {error}"


def _kvm_kind(view: HostView) -> tuple[str | None, str]:
    """("amd", "intel", "arm", "pvm" or None, an explanation)."""
    if view.exists("/sys/module/kvm_amd"):
        return "amd", "hardware-assisted (kvm_amd, AMD-V)"
    if view.exists("/sys/module/kvm_intel"):
        return "intel", "hardware-assisted (kvm_intel, VT-x)"
    if view.exists("/sys/module/kvm_pvm"):
        return "pvm", (
            "PVM (kvm_pvm): a paravirtual KVM for machines without hardware virtualization. "
            "It runs only PVM-enlightened guest kernels (CONFIG_PVM_GUEST); a stock guest "
            "kernel does not boot (it fails in KVM's instruction emulator)"
        )
    if view.machine == "aarch64" and view.exists("/dev/kvm"):
        return "arm", "hardware-assisted (arm64 KVM)"
    return None, "no KVM vendor module (kvm_amd, kvm_intel) is loaded"


def _qemu_check(facts: _Facts, backend: str, fix: str) -> Check:
    binary = "qemu-system-aarch64" if facts.view.machine == "aarch64" else "qemu-system-x86_64"
    found = facts.view.which(binary)
    return _check(
        f"{backend}.qemu",
        f"{binary} installed",
        found is not None,
        found or "not found on PATH",
        fix,
        CheckGroup.HOST,
    )


def _nil(facts: _Facts) -> BackendReport:
    return _report(
        "nil",
        "a sandboxed host process; no confidentiality or integrity against the host "
        "(development and CI only)",
        [_wasmtime_check(facts, "nil", CheckGroup.RUNTIME)],
        process=True,
    )


def _kvm(facts: _Facts) -> BackendReport:
    view = facts.view
    kind, kind_detail = _kvm_kind(view)
    arch_ok = view.machine in {"x86_64", "amd64", "aarch64"}
    checks = [
        _check(
            "kvm.arch",
            "x86_64 or aarch64 host",
            arch_ok,
            view.machine,
            "the kvm backend supports x86_64 and aarch64 hosts only",
            CheckGroup.HOST,
        ),
        *_kvm_device_checks(facts, "kvm"),
        _check(
            "kvm.hardware",
            "KVM is hardware-assisted",
            kind in {"amd", "intel", "arm"},
            kind_detail,
            "use a host with hardware virtualization (svm or vmx in /proc/cpuinfo), or nested "
            "virtualization enabled on this VM's host; QEMU TCG (software emulation, about 5x "
            "slower) works for functional tests only",
            CheckGroup.HOST,
        ),
        _qemu_check(facts, "kvm", "install QEMU (Debian: `apt-get install qemu-system-x86`)"),
        _accelerator_check(facts, kind),
    ]
    return _report(
        "kvm", "a KVM micro-VM (QEMU); isolated from other workloads, not from the host", checks
    )


def _accelerator_check(facts: _Facts, kind: str | None) -> Check:
    """How ``donjon run --backend kvm`` would run its VM here. TCG passes this check, but the
    ``hardware`` check still fails then, so ``kvm`` is never chosen automatically under TCG."""
    view = facts.view
    qemu = view.which("qemu-system-aarch64" if view.machine == "aarch64" else "qemu-system-x86_64")
    hardware = kind in {"amd", "intel", "arm"} and facts.kvm_open_error is None
    detail = "none: no QEMU to run the VM"
    if qemu is not None and hardware:
        detail = "KVM (hardware-assisted): Keeps boot with -accel kvm"
    elif qemu is not None and facts.x86:
        detail = (
            "TCG (QEMU's software emulation): `donjon run --backend kvm` works here, but about "
            "8 s to start and ~5x slower; for functional tests only, never chosen automatically"
        )
    return _check(
        "kvm.accelerator",
        "how a kvm Keep would run",
        not detail.startswith("none"),
        detail,
        "install QEMU (Debian: `apt-get install qemu-system-x86`, or scripts/ensure-qemu)",
        CheckGroup.HOST,
    )


def _cpu_vendor_check(facts: _Facts, backend: str, want: str, fix: str) -> Check:
    cpu = facts.cpu
    found = cpu.vendor or ("unknown" if facts.cpuinfo_found else "/proc/cpuinfo unreadable")
    detail = f"{found} ({cpu.model})" if cpu.model else found
    return _check(
        f"{backend}.cpu_vendor",
        f"{want} CPU",
        facts.x86 and cpu.vendor == want,
        detail if facts.x86 else f"{facts.view.machine}: not an x86_64 machine",
        fix,
        CheckGroup.HOST,
    )


def _cpu_flag_check(facts: _Facts, backend: str, flag: str, name: str, fix: str) -> Check:
    ok = flag in facts.cpu.flags
    detail = f"'{flag}' in /proc/cpuinfo flags" if ok else f"no '{flag}' in /proc/cpuinfo flags"
    return _check(
        f"{backend}.cpu_{flag}",
        name,
        ok,
        detail,
        fix + ("" if ok else facts.vm_note()),
        CheckGroup.HOST,
    )


def _module_param_check(
    facts: _Facts, backend: str, module: str, param: str, fix: str
) -> list[Check]:
    view = facts.view
    loaded = view.exists(f"/sys/module/{module}")
    value = view.read_text(f"/sys/module/{module}/parameters/{param}")
    value = value.strip() if value is not None else None
    return [
        _check(
            f"{backend}.{module}",
            f"{module} loaded",
            loaded,
            "loaded" if loaded else f"/sys/module/{module} absent",
            f"load it (`modprobe {module}`) on a CPU that supports it",
            CheckGroup.HOST,
        ),
        _check(
            f"{backend}.{module}_{param}",
            f"{module} {param} enabled",
            value in {"Y", "1"},
            f"{param}={value}" if value is not None else f"parameter {param} absent",
            fix,
            CheckGroup.HOST,
        ),
    ]


def _tsm_check(facts: _Facts, backend: str, fix_extra: str) -> Check:
    return _check(
        f"{backend}.tsm",
        "configfs-tsm reports available",
        facts.tsm,
        TSM_REPORT_DIR if facts.tsm else f"{TSM_REPORT_DIR} absent",
        "use a guest kernel >= 6.7 with CONFIG_TSM_REPORTS and mount configfs "
        "(`mount -t configfs none /sys/kernel/config`)" + fix_extra,
        CheckGroup.GUEST,
    )


def _sev_snp(facts: _Facts) -> BackendReport:
    view = facts.view
    sev_present = view.exists("/dev/sev")
    sev_error = view.open_error("/dev/sev") if sev_present else "absent"
    guest_dev = view.exists("/dev/sev-guest")
    guest_dev_error = view.open_error("/dev/sev-guest") if guest_dev else "absent"
    interface = (
        f"configfs-tsm ({TSM_REPORT_DIR})"
        if facts.tsm
        else "/dev/sev-guest (SNP_GET_REPORT ioctl)"
        if guest_dev_error is None
        else f"neither {TSM_REPORT_DIR} nor a usable /dev/sev-guest ({guest_dev_error})"
    )
    checks = [
        _cpu_vendor_check(
            facts, "sev-snp", "AuthenticAMD", "SEV-SNP needs an AMD EPYC 7003 (Milan) or newer"
        ),
        _cpu_flag_check(
            facts,
            "sev-snp",
            "sev_snp",
            "CPU offers SEV-SNP",
            "enable SEV-SNP (SMEE and SNP memory coverage) in the BIOS and boot a host kernel "
            "with SNP support (>= 6.11).",
        ),
        *_module_param_check(
            facts,
            "sev-snp",
            "kvm_amd",
            "sev_snp",
            "boot a host kernel >= 6.11 with SNP firmware installed and load kvm_amd with "
            "sev_snp=1",
        ),
        _check(
            "sev-snp.sev_device",
            "/dev/sev opens read-write",
            sev_error is None,
            _open_detail(sev_error),
            "load the ccp driver (`modprobe ccp`) with SEV firmware, and grant access to /dev/sev "
            "(a udev rule or group)",
            CheckGroup.HOST,
        ),
        *_kvm_device_checks(facts, "sev-snp"),
        _qemu_check(
            facts,
            "sev-snp",
            "install QEMU >= 9.1 (it can start SEV-SNP guests; Debian bookworm's 7.2 cannot) "
            "and an AmdSev OVMF build",
        ),
        _check(
            "sev-snp.guest_device",
            "inside an SEV-SNP guest (/dev/sev-guest)",
            guest_dev,
            "present" if guest_dev else "absent: this machine is not an SEV-SNP guest",
            "run inside an SEV-SNP VM whose kernel has the sev-guest driver (`modprobe sev-guest`)",
            CheckGroup.GUEST,
        ),
        _check(
            "sev-snp.guest_evidence",
            "SNP evidence interface",
            facts.tsm or guest_dev_error is None,
            interface,
            "mount configfs on a guest kernel >= 6.7 with CONFIG_TSM_REPORTS, or grant access to "
            "/dev/sev-guest",
            CheckGroup.GUEST,
        ),
        _wasmtime_check(facts, "sev-snp", CheckGroup.GUEST),
    ]
    return _report(
        "sev-snp",
        "an AMD SEV-SNP confidential VM: memory encrypted and integrity-protected from the host",
        checks,
    )


def _tdx(facts: _Facts) -> BackendReport:
    view = facts.view
    guest_flag = "tdx_guest" in facts.cpu.flags
    guest_dev = view.exists("/dev/tdx_guest")
    checks = [
        _cpu_vendor_check(
            facts,
            "tdx",
            "GenuineIntel",
            "TDX needs an Intel Xeon Scalable of the 4th generation (Sapphire Rapids) or newer",
        ),
        _cpu_flag_check(
            facts,
            "tdx",
            "tdx_host_platform",
            "CPU offers TDX to the host",
            "enable TDX in the BIOS (TME-MT, TDX and the SEAM loader) and boot a host kernel with "
            "TDX host support (>= 6.16, or a distribution's TDX kernel).",
        ),
        *_module_param_check(
            facts, "tdx", "kvm_intel", "tdx", "load kvm_intel with tdx=1 on a TDX-enabled host"
        ),
        *_kvm_device_checks(facts, "tdx"),
        _qemu_check(
            facts, "tdx", "install QEMU >= 10.1 (it can start TDX guests) and a TDVF (OVMF) build"
        ),
        _check(
            "tdx.guest",
            "inside a TDX guest",
            guest_flag or guest_dev,
            "yes: "
            + " and ".join(
                s
                for s, present in (
                    ("tdx_guest CPU flag", guest_flag),
                    ("/dev/tdx_guest", guest_dev),
                )
                if present
            )
            if guest_flag or guest_dev
            else "no tdx_guest CPU flag and no /dev/tdx_guest: this machine is not a TDX guest",
            "run inside a TDX trust domain whose kernel has CONFIG_INTEL_TDX_GUEST",
            CheckGroup.GUEST,
        ),
        _tsm_check(
            facts,
            "tdx",
            "; a TDX quote also needs a quote generation service (QGS) on the host. "
            "(/dev/tdx_guest alone gives a TDREPORT, which is not remotely verifiable)",
        ),
        _wasmtime_check(facts, "tdx", CheckGroup.GUEST),
    ]
    return _report(
        "tdx",
        "an Intel TDX trust domain: memory encrypted and integrity-protected from the host",
        checks,
    )


def _sgx(facts: _Facts) -> BackendReport:
    view = facts.view

    def device(path: str, name: str, fix: str) -> Check:
        present = view.exists(path)
        error = view.open_error(path) if present else "absent"
        return _check(
            f"sgx.{path.rsplit('/', 1)[-1]}",
            name,
            error is None,
            _open_detail(error),
            fix,
            CheckGroup.HOST,
        )

    aesm = view.exists("/var/run/aesmd/aesm.socket")
    gramine = view.which("gramine-sgx")
    checks = [
        _wasmtime_check(facts, "sgx", CheckGroup.RUNTIME),
        _cpu_vendor_check(
            facts,
            "sgx",
            "GenuineIntel",
            "SGX needs an Intel CPU with SGX2 and FLC (Xeon Ice Lake+)",
        ),
        _cpu_flag_check(
            facts, "sgx", "sgx", "CPU offers SGX", "enable SGX in the BIOS (and size the PRM)."
        ),
        _cpu_flag_check(
            facts,
            "sgx",
            "sgx_lc",
            "CPU offers Flexible Launch Control",
            "the in-kernel SGX driver needs FLC (sgx_lc); SGX1-only CPUs are unsupported.",
        ),
        device(
            "/dev/sgx_enclave",
            "/dev/sgx_enclave opens read-write",
            "use a kernel >= 5.11 with CONFIG_X86_SGX and add your user to the sgx group",
        ),
        device(
            "/dev/sgx_provision",
            "/dev/sgx_provision opens read-write",
            "DCAP attestation keys need it: add your user to the sgx_prv group",
        ),
        _check(
            "sgx.aesm",
            "AESM service socket",
            aesm,
            "/var/run/aesmd/aesm.socket" if aesm else "/var/run/aesmd/aesm.socket absent",
            "install and start Intel's AESM service (sgx-aesm-service) with the DCAP quote "
            "provider (libsgx-dcap-default-qpl)",
            CheckGroup.HOST,
        ),
        _check(
            "sgx.gramine",
            "gramine-sgx installed",
            gramine is not None,
            gramine or "not found on PATH",
            "install Gramine (https://gramine.readthedocs.io): the keep runtime runs under "
            "gramine-sgx",
            CheckGroup.HOST,
        ),
    ]
    return _report(
        "sgx",
        "the keep runtime in an Intel SGX enclave (Gramine): memory encrypted from the host",
        checks,
    )


def _cca(facts: _Facts) -> BackendReport:
    view = facts.view
    arm = view.machine == "aarch64"
    realm = arm and view.exists("/sys/bus/platform/devices/arm-cca-dev")
    checks = [
        _check(
            "cca.arch",
            "aarch64 host",
            arm,
            view.machine,
            "Arm CCA needs an Armv9-A CPU with the Realm Management Extension (RME)",
            CheckGroup.HOST,
        ),
        *_kvm_device_checks(facts, "cca"),
        _check(
            "cca.rme",
            "KVM can create Realms",
            False,
            "mainline Linux has no CCA host support yet, and no file shows whether KVM can "
            "create Realms; donjon does not create Realms itself",
            "run donjon inside a Realm instead (guest mode), on a kernel >= 6.13",
            CheckGroup.HOST,
        ),
        _check(
            "cca.realm",
            "inside an Arm CCA Realm",
            realm,
            "yes: arm-cca-dev platform device present"
            if realm
            else "no arm-cca-dev platform device: this machine is not a Realm",
            "boot this VM as a Realm with a kernel >= 6.13 (CONFIG_ARM_CCA_GUEST)",
            CheckGroup.GUEST,
        ),
        _tsm_check(facts, "cca", ""),
        _wasmtime_check(facts, "cca", CheckGroup.GUEST),
    ]
    return _report(
        "cca", "an Arm CCA Realm: memory isolated from the host by the RMM firmware", checks
    )


__all__ = [
    "BACKENDS",
    "PREFERENCE",
    "TSM_REPORT_DIR",
    "BackendReport",
    "Check",
    "CheckGroup",
    "CpuInfo",
    "HostSummary",
    "HostView",
    "Mode",
    "best_available",
    "hardware_kvm",
    "host_summary",
    "parse_cpuinfo",
    "probe_all",
]

"""Backends: where a Keep runs. Host-side platform probes (``probe``) and keep launchers
(``nil``; ``kvm``: a QEMU micro-VM, see ``kvm.launcher`` and ``kvm.image``); guest-side evidence
providers (``evidence``, ``tsm``, ``devices``, ``nil_evidence``).

Does not verify evidence (``donjon.attestation``) or run Wasm (``donjon.keep``).
"""

from __future__ import annotations

from donjon._lazy import lazy_exports

_EXPORTS = {
    "HostView": "host_view",
    "probe_all": "probe",
    "best_available": "probe",
    "BackendReport": "probe",
    "EvidenceProvider": "evidence",
    "detect_provider": "evidence",
    "TsmReportProvider": "tsm",
    "NilEvidenceProvider": "nil_evidence",
    "runtime_measurement": "nil_evidence",
    "NilKeepLoader": "nil",
    "KvmKeepLoader": "kvm.launcher",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

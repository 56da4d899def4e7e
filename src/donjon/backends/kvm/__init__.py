"""The ``kvm`` backend: a Keep as a QEMU micro-VM, booted directly from a reproducible image.

- ``image``: the guest image (Debian's cloud kernel, an initramfs with this CPython, wasmtime and
  the guest agent, a manifest), built and cached by ``python -m donjon.backends.kvm.image build``.
- ``launcher``: :class:`KvmKeepLoader`, which ``donjon run --backend kvm`` uses like the ``nil``
  loader: it boots the VM, hands it the workload and relays stdio and the exit code.
- ``channel``, ``qemu``, ``cpio``, ``kernel``: the pure parts (framing, the QEMU command line,
  the newc format, the kernel package).

What ``kvm`` isolates: the workload from other workloads and from the host's files and network
(the VM has neither). What it does **not**: anything from the host, which can read and change the
VM's memory. It gives no hardware evidence. The guest side is :mod:`donjon.keep.vmguest`.

Exports are lazy: importing this package (the guest agent does) loads nothing else.
"""

from __future__ import annotations

from donjon._lazy import lazy_exports

_EXPORTS = {
    "KvmKeepLoader": "launcher",
    "KvmKeep": "launcher",
    "GuestImage": "image",
    "ImageManifest": "image",
    "build_image": "image",
    "ensure_image": "image",
    "find_image": "image",
    "image_root": "image",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

"""The host ↔ guest channel of a ``kvm`` Keep: sans-I/O framing over a virtio-serial port.

The guest agent (:mod:`donjon.keep.vmguest`) and the host launcher (:mod:`.launcher`) exchange
length-prefixed CBOR frames (``u32be(length) || CBOR map``) over one byte stream: a
``virtserialport`` named :data:`PORT_NAME` in the guest, a unix socket on the host. The frames
after the first are the keep session's own (:mod:`donjon.wire.frames`), so a ``kvm`` Keep speaks
what a deployed Keep speaks inside its TLS channel::

    guest → host:  {"t": "ready", "v": 1, "net": [tstr...], "uptime_s": float}     (once, first)
    host → guest:  WorkloadFrame (config, module, module_sha256, program, args)
                   DataFrame("stdin") ... StdinEofFrame
    guest → host:  DataFrame("stdout" | "stderr") ... ExitFrame(code, error, message)

Rule 1: the ready frame is bounded (:data:`MAX_READY_BYTES`) and checked before anything is sent
to the guest: version, and that the guest has no network interface but ``lo``.
Rule 2: nothing here does I/O; :func:`split_frame` (the keep session's own framing, from
:mod:`donjon.wire.frames`) takes bytes from a buffer and the callers own their sockets and files.

Example:
    >>> blob = encode_ready(ReadyFrame(net=("lo",), uptime_s=4.2))
    >>> frame, rest = split_frame(bytearray(blob), max_bytes=MAX_READY_BYTES)
    >>> decode_ready(frame).net
    ('lo',)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from donjon.errors import DecodeError, RemoteProtocolError
from donjon.wire.cbor import decode, encode
from donjon.wire.frames import prefixed, split_frame

__all__ = [
    "CHANNEL_VERSION",
    "MAX_READY_BYTES",
    "PORT_NAME",
    "ReadyFrame",
    "decode_ready",
    "encode_ready",
    "split_frame",
]

CHANNEL_VERSION = 1
"""Version of the channel's ready frame; the host refuses any other."""

PORT_NAME = "donjon.0"
"""The ``virtserialport`` name the guest agent looks for in ``/sys/class/virtio-ports/*/name``."""

MAX_READY_BYTES = 4096
"""Largest ready frame (bytes): a few interface names and numbers."""

_MAX_INTERFACES = 64  # network interfaces listed in a ready frame
_MAX_NAME_CHARS = 15  # IFNAMSIZ less the NUL


@dataclass(frozen=True, slots=True)
class ReadyFrame:
    """The guest agent is up and waits for its workload.

    Attributes:
        net: the guest's network interfaces (``/sys/class/net``), sorted; ``("lo",)`` when the
            VM has no network device, as it must.
        uptime_s: the guest kernel's uptime when the agent sent it (seconds), for boot timing.
    """

    net: tuple[str, ...]
    uptime_s: float


def encode_ready(frame: ReadyFrame) -> bytes:
    """The ready frame with its length prefix."""
    payload = encode(
        {"t": "ready", "v": CHANNEL_VERSION, "net": list(frame.net), "uptime_s": frame.uptime_s}
    )
    return prefixed(payload)


def decode_ready(payload: bytes) -> ReadyFrame:
    """Parse a ready frame's CBOR payload (without its length prefix).

    Raises:
        RemoteProtocolError: not a ready frame of this version, or malformed.
    """
    try:
        body: Any = decode(payload, what="kvm ready frame", max_bytes=MAX_READY_BYTES)
    except DecodeError as e:
        raise RemoteProtocolError(str(e)) from e
    if not isinstance(body, dict) or body.get("t") != "ready":
        raise RemoteProtocolError("the guest's first frame is not a ready frame")
    if body.get("v") != CHANNEL_VERSION:
        raise RemoteProtocolError(
            f"the guest speaks channel version {body.get('v')!r}, not {CHANNEL_VERSION}: its "
            "image comes from another donjon; rebuild it (python -m donjon.backends.kvm.image "
            "build)"
        )
    net, uptime = body.get("net"), body.get("uptime_s")
    if (
        not isinstance(net, list)
        or len(net) > _MAX_INTERFACES
        or not all(isinstance(n, str) and 0 < len(n) <= _MAX_NAME_CHARS for n in net)
    ):
        raise RemoteProtocolError("ready frame: net must be a list of interface names")
    if not isinstance(uptime, float | int) or isinstance(uptime, bool) or not math.isfinite(uptime):
        raise RemoteProtocolError("ready frame: uptime_s must be a number")
    return ReadyFrame(net=tuple(net), uptime_s=float(uptime))

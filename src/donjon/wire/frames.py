"""The keep session protocol: length-prefixed CBOR frames over the attested TLS channel.

After the client has verified the Keep, it and the keep runtime exchange frames::

    frame   = u32be(length) || CBOR map       (length counts the CBOR bytes only)
    client → keep:  {"t": "workload", "v": 1, "config": map, "module": bstr, "module_sha256": bstr,
                     ? "program": tstr, ? "args": [* tstr]}
                    {"t": "package", "v": 1, "reference": tstr (REGISTRY/REPO@sha256:...),
                     "credentials": {"username": tstr, "password": tstr} / null,
                     "publisher_keys": [* bstr (PEM)], ? "args": [* tstr]}
                    {"t": "stdin", "data": bstr}   {"t": "stdin-eof"}   (any time after the first)
    keep → client:  {"t": "stdout", "data": bstr}  {"t": "stderr", "data": bstr}
                    {"t": "exit", "code": int, "error": tstr / null, "message": tstr / null}

Rule 1: a frame larger than its type allows is refused before it is buffered whole.
Rule 2: unknown frame types are a protocol error (this version defines them all); unknown keys in a
known frame are ignored, so later versions can add optional keys. The optional keys are encoded only
when set, so a frame without them has the same bytes as in the first release.

``program`` is the workload's ``argv[0]`` (the module's file name, as ``donjon run`` gives it) and
``args`` the arguments that follow the config's ``args`` (the command line's ``-- ARGS``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from donjon.errors import DecodeError, EncodeError, RemoteProtocolError
from donjon.wire.cbor import decode, encode

PROTOCOL_VERSION = 1
MAX_MODULE_BYTES = 128 * 1024 * 1024
"""Largest Wasm module a Keep accepts (bytes); Enarx allowed 100 MB."""
MAX_FRAME_BYTES = MAX_MODULE_BYTES + 1024 * 1024
"""Largest frame (bytes): a workload frame with its config."""
MAX_DATA_FRAME_BYTES = 1024 * 1024
"""Largest stdout/stderr/stdin chunk in one frame (bytes)."""
MAX_PROGRAM_CHARS = 255
"""Longest ``program`` (argv[0]): a file name (NAME_MAX on Linux)."""
MAX_ARGS = 4096
"""Most extra arguments in one frame."""
MAX_ARGS_BYTES = 1024 * 1024
"""Most bytes of extra arguments in one frame (UTF-8, summed); Linux allows 2 MiB for all."""
_HEADER = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class WorkloadFrame:
    """The workload itself: module, digest, config, and how to invoke it.

    Attributes:
        program: ``argv[0]`` in the Keep; ``None`` means ``main.wasm``.
        args: arguments after the config's ``args``.
    """

    config: dict[str, Any]
    module: bytes
    module_sha256: bytes
    program: str | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PackageFrame:
    """Fetch the workload from a registry by digest (after attestation), with the client's
    registry credentials (which only the attested Keep sees) and required publisher keys."""

    reference: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    publisher_keys: tuple[bytes, ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream: str  # "stdout" | "stderr" | "stdin"
    data: bytes


@dataclass(frozen=True, slots=True)
class StdinEofFrame:
    pass


@dataclass(frozen=True, slots=True)
class ExitFrame:
    code: int
    error: str | None = None
    message: str | None = None


Frame = WorkloadFrame | PackageFrame | DataFrame | StdinEofFrame | ExitFrame


def encode_frame(frame: Frame) -> bytes:
    """Encode one frame with its length prefix."""
    body: dict[str, Any]
    match frame:
        case WorkloadFrame(
            config=config, module=module, module_sha256=digest, program=program, args=args
        ):
            body = {
                "t": "workload",
                "v": PROTOCOL_VERSION,
                "config": config,
                "module": module,
                "module_sha256": digest,
            }
            if program is not None:
                body["program"] = _checked_program(program, EncodeError)
            if args:
                body["args"] = list(_checked_args(list(args), EncodeError))
        case PackageFrame(
            reference=ref, username=user, password=pw, publisher_keys=keys, args=args
        ):
            credentials = None if user is None else {"username": user, "password": pw or ""}
            body = {
                "t": "package",
                "v": PROTOCOL_VERSION,
                "reference": ref,
                "credentials": credentials,
                "publisher_keys": list(keys),
            }
            if args:
                body["args"] = list(_checked_args(list(args), EncodeError))
        case DataFrame(stream=stream, data=data):
            if len(data) > MAX_DATA_FRAME_BYTES:
                raise EncodeError(f"{stream} chunk of {len(data)} bytes; split it")
            body = {"t": stream, "data": data}
        case StdinEofFrame():
            body = {"t": "stdin-eof"}
        case ExitFrame(code=code, error=error, message=message):
            body = {"t": "exit", "code": code, "error": error, "message": message}
    payload = encode(body)
    if len(payload) > MAX_FRAME_BYTES:
        raise EncodeError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return prefixed(payload)


def prefixed(payload: bytes) -> bytes:
    """*payload* with its frame header: ``u32be(len(payload)) || payload``."""
    return _HEADER.pack(len(payload)) + payload


def split_frame(buffer: bytearray, *, max_bytes: int) -> tuple[bytes, bytearray] | None:
    """Take one whole frame's payload off the front of *buffer*.

    Returns:
        ``(payload, rest)``, or ``None`` while the frame is incomplete.

    Raises:
        RemoteProtocolError: the header announces more than *max_bytes* (said before the
            frame itself is waited for, so a peer cannot make us buffer it).
    """
    if len(buffer) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack_from(buffer)
    if length > max_bytes:
        raise RemoteProtocolError(f"peer announced a {length}-byte frame; limit {max_bytes}")
    end = _HEADER.size + length
    if len(buffer) < end:
        return None
    return bytes(buffer[_HEADER.size : end]), buffer[end:]


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, take frames out.

    Raises:
        RemoteProtocolError: a length beyond the limit or a malformed frame.
    """

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed."""
        taken = split_frame(self._buf, max_bytes=self._max)
        if taken is None:
            return None
        payload, self._buf = taken
        try:
            return _parse(decode(payload, what="keep frame", max_bytes=self._max))
        except DecodeError as e:
            raise RemoteProtocolError(str(e)) from e


def _parse(body: Any) -> Frame:
    if not isinstance(body, dict):
        raise RemoteProtocolError("keep frame is not a CBOR map")
    kind = body.get("t")
    if kind == "workload":
        config, module, digest = body.get("config"), body.get("module"), body.get("module_sha256")
        if body.get("v") != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"workload frame version {body.get('v')!r}; this Keep speaks {PROTOCOL_VERSION}"
            )
        if not isinstance(config, dict) or not isinstance(module, bytes):
            raise RemoteProtocolError("workload frame needs a config map and module bytes")
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise RemoteProtocolError("workload frame needs a 32-byte module_sha256")
        if len(module) > MAX_MODULE_BYTES:
            raise RemoteProtocolError(f"module of {len(module)} bytes; limit {MAX_MODULE_BYTES}")
        program = body.get("program")
        return WorkloadFrame(
            config=config,
            module=module,
            module_sha256=digest,
            program=None if program is None else _checked_program(program, RemoteProtocolError),
            args=_checked_args(body.get("args", []), RemoteProtocolError),
        )
    if kind == "package":
        return _parse_package(body)
    if kind in ("stdout", "stderr", "stdin"):
        data = body.get("data")
        if not isinstance(data, bytes) or len(data) > MAX_DATA_FRAME_BYTES:
            raise RemoteProtocolError(f"{kind} frame needs data bytes of at most 1 MiB")
        return DataFrame(stream=kind, data=data)
    if kind == "stdin-eof":
        return StdinEofFrame()
    if kind == "exit":
        code, error, message = body.get("code"), body.get("error"), body.get("message")
        if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 255:
            raise RemoteProtocolError("exit frame needs a code 0..255")
        if error is not None and not isinstance(error, str):
            raise RemoteProtocolError("exit frame error must be text")
        if message is not None and not isinstance(message, str):
            raise RemoteProtocolError("exit frame message must be text")
        return ExitFrame(code=code, error=error, message=message)
    raise RemoteProtocolError(f"unknown keep frame type {kind!r}")


MAX_REFERENCE_CHARS = 1024
MAX_PUBLISHER_KEYS = 8
MAX_PUBLISHER_KEY_BYTES = 16 * 1024


def _parse_package(body: dict[Any, Any]) -> PackageFrame:
    if body.get("v") != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"package frame version {body.get('v')!r}; this Keep speaks {PROTOCOL_VERSION}"
        )
    ref, creds, keys = body.get("reference"), body.get("credentials"), body.get("publisher_keys")
    if not isinstance(ref, str) or not 0 < len(ref) <= MAX_REFERENCE_CHARS:
        raise RemoteProtocolError("package frame needs a registry reference")
    username = password = None
    if creds is not None:
        if not isinstance(creds, dict):
            raise RemoteProtocolError("package credentials must be a map")
        username, password = creds.get("username"), creds.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise RemoteProtocolError("package credentials need a username and a password")
        if len(username) > 1024 or len(password) > 16 * 1024:
            raise RemoteProtocolError("package credentials are too long")
    if not isinstance(keys, list) or len(keys) > MAX_PUBLISHER_KEYS:
        raise RemoteProtocolError(f"publisher_keys must be a list of at most {MAX_PUBLISHER_KEYS}")
    if not all(isinstance(k, bytes) and len(k) <= MAX_PUBLISHER_KEY_BYTES for k in keys):
        raise RemoteProtocolError("each publisher key must be PEM bytes of at most 16 KiB")
    return PackageFrame(
        reference=ref,
        username=username,
        password=password,
        publisher_keys=tuple(keys),
        args=_checked_args(body.get("args", []), RemoteProtocolError),
    )


def _checked_program(program: Any, error: type[EncodeError | RemoteProtocolError]) -> str:
    """argv[0]: a file name, not a path (it names the module, nothing on any file system)."""
    if (
        not isinstance(program, str)
        or not 0 < len(program) <= MAX_PROGRAM_CHARS
        or "/" in program
        or "\0" in program
    ):
        raise error(
            f"program must be a file name of 1..{MAX_PROGRAM_CHARS} characters without '/' or NUL"
        )
    return program


def _checked_args(args: Any, error: type[EncodeError | RemoteProtocolError]) -> tuple[str, ...]:
    if not isinstance(args, list) or len(args) > MAX_ARGS:
        raise error(f"args must be a list of at most {MAX_ARGS} strings")
    total = 0
    for arg in args:
        if not isinstance(arg, str) or "\0" in arg:
            raise error("each argument must be text without NUL")
        total += len(arg.encode("utf-8", "surrogatepass"))
        if total > MAX_ARGS_BYTES:
            raise error(f"the arguments exceed {MAX_ARGS_BYTES} bytes")
    return tuple(args)

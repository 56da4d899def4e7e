"""The deploy flow against a hostile host (issue 5), with real processes on 127.0.0.1.

Each attack is mounted through a seam the host really controls: the keep manager's ``Launcher``
(what it starts as "the Keep", with which parameters), the relay (``RelayTap``), or the whole
keep-manager API (a hostile HTTP server). Every test asserts that the client refuses with the
specific error, AND that no byte of the workload reached anything but a verified Keep: the
module carries a unique marker (a ~192 KiB custom section), and the test searches everything an
impostor decrypted and everything the relay carried.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from donjon.client.channel import ChannelError
from donjon.client.deploy import DeployOptions, DeployResult, Workload, deploy
from donjon.client.host_api import HostClient, HostRefusedError
from donjon.errors import (
    ChainError,
    ConnectError,
    Error,
    FreshnessError,
    MeasurementError,
    PolicyError,
    RemoteProtocolError,
    TransportError,
)
from donjon.host.auth import Principal
from donjon.wire.cbor import encode
from tests.integration.deploy_support import (
    EXAMPLES,
    ImpostorLauncher,
    ManagerHandle,
    RelayRecorder,
    RewritingLauncher,
    StewardHandle,
    assert_one_error_line,
    deploy_captured,
    deploy_options,
    flip_byte,
    impostor_log,
    impostor_received,
    keep_processes,
    marked_module,
    pid_alive,
    run_donjon,
    running_manager,
    running_steward,
    serving,
    stop_all_keeps,
    wait_for_keep_processes,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dev_key")]

MODULE_BYTES = 192 * 1024
HANDSHAKE_BYTES_MAX = 8 * 1024
"""What a client sends before the workload: its TLS handshake flights, far below the module."""


@pytest.fixture
def marker() -> bytes:
    return secrets.token_hex(16).encode()


@pytest.fixture
def workload(tmp_path: Path, marker: bytes) -> Workload:
    module = tmp_path / "secret.wasm"
    module.write_bytes(marked_module((EXAMPLES / "hello.wasm").read_bytes(), marker))
    return Workload.load(module)


@pytest.fixture
def steward() -> Iterator[StewardHandle]:
    with running_steward() as handle:
        yield handle


def _only_keep_dir(host: ManagerHandle) -> Path:
    [record] = host.manager.list_keeps(Principal("admin"))
    return host.keep_dir(record.id)


def _assert_nothing_leaked(recorder: RelayRecorder, marker: bytes) -> None:
    assert 0 < recorder.bytes_to_keep() < HANDSHAKE_BYTES_MAX
    assert marker not in recorder.carried()


def _assert_refused_keep_stopped(host: ManagerHandle) -> None:
    """The client stopped the Keep it refused (whatever the host had put behind it)."""
    [keep] = host.manager.list_keeps(Principal("admin"))
    assert (keep.state, keep.detail) == ("stopped", "stopped by its owner")


STEWARD = pytest.mark.parametrize("with_steward", [False, True], ids=["ra-tls", "steward"])


def _maybe_steward(with_steward: bool) -> contextlib.AbstractContextManager[Any]:
    return running_steward() if with_steward else contextlib.nullcontext()


# -- 1. the host substitutes a Keep of its own ------------------------------------------------


@STEWARD
def test_impostor_without_evidence(
    tmp_path: Path, workload: Workload, marker: bytes, with_steward: bool
) -> None:
    recorder = RelayRecorder()
    launcher = ImpostorLauncher("no-evidence")
    with (
        _maybe_steward(with_steward) as steward,
        running_manager(tmp_path / "host", launcher=launcher, relay_tap=recorder) as host,
    ):
        if with_steward:
            # Not signed by the Steward CA the client trusts: the handshake itself fails.
            with pytest.raises(ChainError, match="not issued by the Steward CA you trust"):
                deploy_captured(workload, deploy_options(host, steward, insecure=True))
        else:
            with pytest.raises(PolicyError, match="carries no evidence"):
                deploy_captured(workload, deploy_options(host, steward, insecure=True))
        keep_dir = _only_keep_dir(host)
        # The impostor was really contacted (it logged the connection before the client left).
        assert impostor_log(keep_dir)[0] == "connection"
        assert impostor_received(keep_dir) == b""
        _assert_nothing_leaked(recorder, marker)
        _assert_refused_keep_stopped(host)


@STEWARD
def test_impostor_with_another_keep_runtime(
    tmp_path: Path, workload: Workload, marker: bytes, with_steward: bool
) -> None:
    # Genuine nil evidence (or a genuine certificate from the trusted Steward, whose dev policy
    # admits any nil Keep) bound to the impostor's key and the client's own nonce: only the
    # keep-runtime measurement differs from the client's.
    recorder = RelayRecorder()
    with (
        _maybe_steward(with_steward) as steward,
        running_manager(
            tmp_path / "host", launcher=ImpostorLauncher("wrong-measurement"), relay_tap=recorder
        ) as host,
    ):
        with pytest.raises(MeasurementError, match="the host runs another keep runtime"):
            deploy_captured(workload, deploy_options(host, steward, insecure=True))
        keep_dir = _only_keep_dir(host)
        # The impostor logs its side of the handshake after the client has finished its own.
        wait_until(
            lambda: impostor_log(keep_dir)[:2] == ["connection", "handshake ok"],
            what="the impostor's handshake in its log",
        )
        assert impostor_received(keep_dir) == b""
        _assert_nothing_leaked(recorder, marker)
        _assert_refused_keep_stopped(host)


def test_keep_certified_by_a_rogue_steward(
    tmp_path: Path, workload: Workload, marker: bytes, steward: StewardHandle
) -> None:
    # The host points the (real) Keep at its own Steward, whose CA the client does not trust.
    recorder = RelayRecorder()
    with running_steward() as rogue:

        def to_rogue(params: dict[str, Any]) -> dict[str, Any]:
            return params | {"steward": rogue.url, "steward_ca_pem": rogue.ca_pem}

        with running_manager(
            tmp_path / "host", launcher=RewritingLauncher(to_rogue), relay_tap=recorder
        ) as host:
            with pytest.raises(ChainError, match="not issued by the Steward CA you trust"):
                deploy_captured(workload, deploy_options(host, steward, insecure=True))
            _assert_refused_keep_stopped(host)  # it never got a workload, and is gone
    _assert_nothing_leaked(recorder, marker)


# -- 2. replayed evidence / certificates ------------------------------------------------------


@STEWARD
def test_host_swaps_the_client_nonce(
    tmp_path: Path, workload: Workload, marker: bytes, with_steward: bool
) -> None:
    # The real Keep binds the nonce the host gave it, not the client's: its evidence (or
    # certificate) is authentic but made for another session.
    recorder = RelayRecorder()
    launcher = RewritingLauncher(lambda p: p | {"nonce": secrets.token_bytes(32)})
    with (
        _maybe_steward(with_steward) as steward,
        running_manager(tmp_path / "host", launcher=launcher, relay_tap=recorder) as host,
    ):
        with pytest.raises(FreshnessError, match="replayed from an earlier Keep"):
            deploy_captured(workload, deploy_options(host, steward, insecure=True))
        _assert_refused_keep_stopped(host)
    _assert_nothing_leaked(recorder, marker)


@STEWARD
def test_host_replays_an_earlier_keep(
    tmp_path: Path, workload: Workload, marker: bytes, with_steward: bool
) -> None:
    recorder = RelayRecorder()
    with (
        _maybe_steward(with_steward) as steward,
        running_manager(tmp_path / "honest") as honest,
    ):
        # An earlier session's Keep, genuine and still waiting for its client.
        with HostClient(honest.url, token=honest.token) as client:
            earlier = client.create_keep(
                backend="nil",
                nonce=secrets.token_bytes(32),
                steward=steward.url if steward else None,
                steward_ca_pem=steward.ca_pem if steward else None,
            )
        earlier_sock = honest.keep_dir(earlier.id) / "keep.sock"
        wait_until(earlier_sock.exists, timeout=30, what="the earlier Keep's socket")
        launcher = ImpostorLauncher(f"replay={earlier_sock}")
        with running_manager(tmp_path / "hostile", launcher=launcher, relay_tap=recorder) as host:
            with pytest.raises(FreshnessError, match="replayed from an earlier Keep"):
                deploy_captured(workload, deploy_options(host, steward, insecure=True))
            wait_until(
                lambda: impostor_log(_only_keep_dir(host)) == ["replaying"],
                what="the impostor's replay in its log",
            )
            _assert_refused_keep_stopped(host)
        # The earlier Keep got a TLS session but no workload: it still waits, unharmed (the
        # client stops the Keep it asked for, never another one the host pointed it at).
        with HostClient(honest.url, token=honest.token) as client:
            assert client.get_keep(earlier.id).state == "running"
    _assert_nothing_leaked(recorder, marker)


# -- 3. the relay flips or drops bytes -------------------------------------------------------


def _upload(index: int, chunk: bytes) -> bool:
    """The chunk carrying the (192 KiB) workload frame, as opposed to handshake flights."""
    return len(chunk) > HANDSHAKE_BYTES_MAX


def _flip_server_hello(d: str, i: int, c: bytes) -> bytes | None:
    return flip_byte(c) if d == "to-client" and i == 0 else c


def _flip_client_hello(d: str, i: int, c: bytes) -> bytes | None:
    return flip_byte(c, len(c) - 8) if d == "to-keep" and i == 0 else c


def _on_first_upload_chunk(
    change: Callable[[bytes], bytes | None],
) -> Callable[[], Callable[[str, int, bytes], bytes | None]]:
    def make() -> Callable[[str, int, bytes], bytes | None]:
        done: list[int] = []

        def mutate(d: str, i: int, c: bytes) -> bytes | None:
            if d == "to-keep" and _upload(i, c) and not done:
                done.append(i)
                return change(c)
            return c

        return mutate

    return make


def _flip_output() -> Callable[[str, int, bytes], bytes | None]:
    uploaded: list[bool] = []

    def mutate(d: str, i: int, c: bytes) -> bytes | None:
        if d == "to-keep" and _upload(i, c):
            uploaded.append(True)
        if d == "to-client" and uploaded and len(uploaded) < 100:
            uploaded.extend([True] * 100)  # flip only the first output chunk
            # In the first record's ciphertext (after its 5-byte header): the client must open
            # that record to get any output. (Near the chunk's end the flip can land in a
            # close_notify that arrives with the exit frame and is never read.)
            return flip_byte(c, 5)
        return c

    return mutate


@pytest.mark.parametrize(
    ("mutation", "expected", "workload_ran"),
    [
        (lambda: _flip_server_hello, ChannelError, False),
        (lambda: _flip_client_hello, ChannelError, False),
        (_on_first_upload_chunk(flip_byte), (ChannelError, RemoteProtocolError), False),
        (_on_first_upload_chunk(lambda c: None), (ChannelError, RemoteProtocolError), False),
        (_flip_output, ChannelError, True),
    ],
    ids=["flip-server-hello", "flip-client-hello", "flip-upload", "drop-upload", "flip-output"],
)
def test_tampering_relay_breaks_the_session(
    tmp_path: Path,
    workload: Workload,
    marker: bytes,
    mutation: Callable[[], Callable[[str, int, bytes], bytes | None]],
    expected: type[Error] | tuple[type[Error], ...],
    workload_ran: bool,
) -> None:
    recorder = RelayRecorder(mutation())
    with running_manager(tmp_path / "host", relay_tap=recorder) as host:
        with pytest.raises(expected):
            deploy_captured(workload, deploy_options(host, None, insecure=True))
        assert recorder.mutated == 1
        [keep] = host.manager.list_keeps(Principal("admin"))
        if not workload_ran:
            # Tampered ciphertext never became a workload, and the client stopped the Keep.
            assert (keep.state, keep.detail) == ("stopped", "stopped by its owner")
        else:
            assert keep.state in ("stopped", "exited")  # whichever came first
    assert marker not in recorder.carried()
    assert b"Hello, world!" not in recorder.carried()


# -- 4. a hostile keep-manager API -----------------------------------------------------------


_KEEP = {
    "id": "0123456789abcdef",
    "owner": "admin",
    "backend": "nil",
    "state": "running",
    "created_at": 1.0,
    "exit_code": None,
    "detail": None,
}
CBOR = "application/cbor"


def _cbor(body: Any, status: int = 201) -> Response:
    return Response(encode(body), status_code=status, media_type=CBOR)


HOSTILE_ANSWERS: dict[str, tuple[Callable[[], Response], type[Error], str]] = {
    "garbage": (
        lambda: Response(b"\xff\xfe\x00garbage", 201, media_type=CBOR),
        RemoteProtocolError,
        "not valid CBOR",
    ),
    "truncated": (
        lambda: Response(encode({"keep": _KEEP})[:-7], 201, media_type=CBOR),
        RemoteProtocolError,
        "not valid CBOR",
    ),
    "oversized": (
        lambda: _cbor({"keep": _KEEP, "pad": bytes(2 * 1024 * 1024)}),
        RemoteProtocolError,
        "exceeds 1048576 bytes",
    ),
    "huge-declared-length": (
        lambda: Response(b"\x5b" + (2**62).to_bytes(8, "big") + b"x", 201, media_type=CBOR),
        RemoteProtocolError,
        "not valid CBOR",
    ),
    "deep-nesting": (
        lambda: Response(b"\x81" * 100_000 + b"\x00", 201, media_type=CBOR),
        RemoteProtocolError,
        "not valid CBOR",
    ),
    "trailing-bytes": (
        lambda: Response(encode({"keep": _KEEP}) + b"\x00", 201, media_type=CBOR),
        RemoteProtocolError,
        "trailing bytes",
    ),
    "html-500": (
        lambda: Response(b"<html>Internal Server Error</html>", 500, media_type="text/html"),
        RemoteProtocolError,
        "HTTP 500 with a body that is not valid CBOR",
    ),
    "empty-204": (lambda: Response(b"", 204), RemoteProtocolError, "is empty"),
    "not-a-map": (lambda: _cbor([1, 2, 3]), RemoteProtocolError, "has no 'keep'"),
    "keep-not-a-map": (lambda: _cbor({"keep": "x"}), RemoteProtocolError, "not a map"),
    "bad-keep-id": (
        lambda: _cbor({"keep": _KEEP | {"id": "../../../../etc"}}),
        RemoteProtocolError,
        "bad Keep id",
    ),
    "missing-field": (
        lambda: _cbor({"keep": {k: v for k, v in _KEEP.items() if k != "owner"}}),
        RemoteProtocolError,
        "malformed Keep",
    ),
    "wrong-type": (
        lambda: _cbor({"keep": _KEEP | {"created_at": "yesterday"}}),
        RemoteProtocolError,
        "malformed Keep",
    ),
    "wrong-status-200": (lambda: _cbor({"keep": _KEEP}, 200), HostRefusedError, "HTTP 200"),
    "refusal-401": (
        lambda: _cbor({"error": "AuthenticationError", "reason": "unknown token"}, 401),
        HostRefusedError,
        "refused the token: unknown token",
    ),
    "refusal-409": (
        lambda: _cbor({"error": "ConfigError", "reason": "x" * 5000}, 409),
        HostRefusedError,
        "refused (HTTP 409)",
    ),
}


class _HostileRelay:
    """What the hostile manager's relay does once it has accepted the WebSocket."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.received = bytearray()

    async def __call__(self, ws: WebSocket) -> None:
        if self.kind == "refuse":
            await ws.close(code=4404)
            return
        await ws.accept()
        if self.kind == "close-4503":
            await ws.close(code=4503, reason="the Keep is not \x1b[31mlistening")
            return
        if self.kind == "text":
            await ws.send_text("hello")
        elif self.kind == "garbage":
            await ws.send_bytes(b"\x16\x03\x03\x00\x05garbage-not-tls" * 10)
        elif self.kind == "close":
            pass
        with contextlib.suppress(Exception):
            self.received += await ws.receive_bytes()
        await ws.close()


@contextlib.contextmanager
def _hostile_manager(answer: Callable[[], Response], relay: _HostileRelay) -> Iterator[str]:
    async def create(request: Request) -> Response:
        await request.body()
        return answer()

    async def relay_endpoint(ws: WebSocket) -> None:
        await relay(ws)

    app = Starlette(
        routes=[
            Route("/v1/keeps", create, methods=["POST"]),
            WebSocketRoute("/v1/keeps/{keep_id}/relay", relay_endpoint),
        ]
    )
    with serving(app) as url:
        yield url


@pytest.mark.parametrize("case", sorted(HOSTILE_ANSWERS))
def test_hostile_manager_answers_library(case: str, workload: Workload) -> None:
    answer, expected, fragment = HOSTILE_ANSWERS[case]
    with _hostile_manager(answer, _HostileRelay("close")) as url:
        with pytest.raises(expected) as caught:
            deploy(
                workload,
                DeployOptions(host=url, token="t" * 64, insecure=True),
                stdout=io.BytesIO(),
                stderr=io.BytesIO(),
            )
    message = caught.value.diagnostics()
    assert fragment in message
    assert len(message) < 1000  # a hostile reason is cut short
    assert "t" * 64 not in message  # the token is never echoed


@pytest.mark.parametrize(
    ("relay", "expected", "fragment"),
    [
        ("refuse", ConnectError, "refused the relay"),
        (
            "close-4503",
            ChannelError,
            # Cleaned of the escape character; whether sending or the handshake noticed first.
            r"relay closed[^\x1b]*4503: the Keep is not \[31mlistening\)$",
        ),
        ("text", RemoteProtocolError, "text message"),
        ("garbage", ChannelError, "TLS handshake with the Keep failed"),
        ("close", ChannelError, "TLS handshake with the Keep failed"),
    ],
)
def test_hostile_relay_library(
    relay: str, expected: type[Error], fragment: str, workload: Workload, marker: bytes
) -> None:
    hostile = _HostileRelay(relay)
    with _hostile_manager(lambda: _cbor({"keep": _KEEP}), hostile) as url:
        with pytest.raises(expected, match=fragment):
            deploy(
                workload,
                DeployOptions(host=url, token="t" * 64, insecure=True),
                stdout=io.BytesIO(),
                stderr=io.BytesIO(),
            )
    assert len(hostile.received) < HANDSHAKE_BYTES_MAX
    assert marker not in hostile.received


@pytest.mark.parametrize(
    "case", ["garbage", "truncated", "oversized", "deep-nesting", "html-500", "bad-keep-id"]
)
def test_hostile_manager_answers_cli(case: str, tmp_path: Path) -> None:
    answer, _, fragment = HOSTILE_ANSWERS[case]
    token = tmp_path / "token"
    token.write_text("t" * 64)
    with _hostile_manager(answer, _HostileRelay("close")) as url:
        result = run_donjon(
            [
                "deploy",
                str(EXAMPLES / "hello.wasm"),
                "--host",
                url,
                "--token-file",
                str(token),
                "--insecure",
            ]
        )
    assert result.stdout == ""
    assert result.returncode == 1
    assert_one_error_line(result, fragment)


def test_hostile_relay_cli(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 64)
    with _hostile_manager(lambda: _cbor({"keep": _KEEP}), _HostileRelay("garbage")) as url:
        result = run_donjon(
            [
                "deploy",
                str(EXAMPLES / "hello.wasm"),
                "--host",
                url,
                "--token-file",
                str(token),
                "--insecure",
            ]
        )
    assert result.returncode == 1
    assert_one_error_line(result, "TLS handshake with the Keep failed")


def test_unreachable_manager_cli(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 64)
    with _hostile_manager(lambda: _cbor({}), _HostileRelay("close")) as url:
        pass  # the port is closed again now
    result = run_donjon(
        ["deploy", str(EXAMPLES / "hello.wasm"), "--host", url, "--token-file", str(token)]
    )
    assert_one_error_line(result, "cannot reach the keep manager")


# -- 5. a crashing or hanging workload takes down only its own Keep -------------------------


def test_crashing_and_hanging_workloads_stay_in_their_keeps(tmp_path: Path) -> None:
    with running_manager(tmp_path / "host") as host:
        options = DeployOptions(host=host.url, token=host.token, insecure=True)
        outcome: dict[str, BaseException | DeployResult] = {}

        def deploy_spin() -> None:
            try:
                outcome["spin"] = deploy(
                    Workload.load(EXAMPLES / "spin.wasm"),
                    options,
                    stdout=io.BytesIO(),
                    stderr=io.BytesIO(),
                )
            except BaseException as e:  # reported to the test thread
                outcome["spin"] = e

        spinner = threading.Thread(target=deploy_spin)
        spinner.start()
        try:
            wait_until(
                lambda: "spin" in outcome or host.manager.list_keeps(Principal("admin")) != [],
                timeout=30,
                what="the hanging Keep",
            )
            assert "spin" not in outcome, outcome
            [spin_keep] = host.manager.list_keeps(Principal("admin"))
            # While one Keep spins forever, another traps and a third runs normally.
            trap = deploy(
                Workload.load(EXAMPLES / "trap.wasm"),
                options,
                stdout=io.BytesIO(),
                stderr=io.BytesIO(),
            )
            assert trap.exit_code == 134
            out = io.BytesIO()
            hello = deploy(
                Workload.load(EXAMPLES / "hello.wasm"), options, stdout=out, stderr=io.BytesIO()
            )
            assert (hello.exit_code, out.getvalue()) == (0, b"Hello, world!\n")
            with HostClient(host.url, token=host.token) as client:
                # A keep runtime that crashes outright (SIGKILL, as a segfault would) ends its
                # own Keep only.
                crash = client.create_keep(backend="nil", nonce=secrets.token_bytes(32))
                crash_pids = wait_for_keep_processes(host.keep_dir(crash.id))
                [runtime] = [
                    pid
                    for pid in crash_pids
                    if "donjon.keep.agent" in Path(f"/proc/{pid}/cmdline").read_text()
                ]
                os.kill(runtime, signal.SIGKILL)
                wait_until(lambda: client.get_keep(crash.id).state == "exited", what="crash")
                assert client.get_keep(crash.id).exit_code == -signal.SIGKILL
                wait_until(lambda: not any(pid_alive(p) for p in crash_pids), timeout=5)
                states = {k.id: (k.state, k.exit_code) for k in client.list_keeps()}
                assert states[spin_keep.id] == ("running", None)
                assert states[trap.keep.id] == ("exited", 134)
                # Its owner stops the hanging Keep: loader and runtime are gone.
                spin_pids = keep_processes(host.keep_dir(spin_keep.id))
                assert len(spin_pids) == 2  # loader + runtime
                stopped = client.stop_keep(spin_keep.id)
                assert stopped.state == "stopped"
        finally:
            stop_all_keeps(host.state_dir, host.manager)  # on any failure, unblock the spinner
            spinner.join(timeout=60)
        assert not spinner.is_alive()
        assert isinstance(outcome["spin"], TransportError | RemoteProtocolError)
        wait_until(lambda: not any(pid_alive(p) for p in spin_pids), what="no spin processes")

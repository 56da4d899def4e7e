"""``donjon deploy`` end to end: a real keep manager, real loaders and keep runtimes, real Steward.

Through the library (``donjon.client.deploy.deploy``) and through the CLI as a process, with and
without a Steward (RA-TLS), checking exact output and exit codes: the workload's own code, a
trap (134), a deadline (137, also while blocked reading stdin), stdin streamed both ways and
bounded in the Keep, arguments after ``--``, ``argv[0]``, and refusal of a nil Keep without
``--insecure`` (nothing sent, and the refused Keep stopped at once).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from donjon.backends.nil_evidence import runtime_measurement
from donjon.client.attested import InsecureKeepError, KeepIdentity
from donjon.client.deploy import DeployOptions, DeployResult, Workload, deploy
from donjon.client.host_api import HostClient, KeepInfo
from donjon.crypto.ca import certificate_spki, verify_issued
from donjon.crypto.ratls import certificate_pem, load_peer_certificate
from donjon.errors import KeepLaunchError, UsageError
from donjon.steward.config import StewardPolicy
from tests.integration.deploy_support import (
    ECHO_TLS_CONFIG,
    EXAMPLES,
    LISTEN_WAIT_S,
    LISTENING,
    ManagerHandle,
    RelayRecorder,
    StewardHandle,
    WatchedStream,
    assert_one_error_line,
    deploy_captured,
    deploy_options,
    echo_once,
    marked_module,
    pid_alive,
    run_donjon,
    running_manager,
    running_steward,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dev_key")]

INSECURE_WARNING = "donjon: WARNING: --insecure"


@pytest.fixture
def steward() -> Iterator[StewardHandle]:
    with running_steward() as handle:
        yield handle


def _workload_dir(tmp_path: Path, module: str, config: str) -> Path:
    d = tmp_path / "workload"
    d.mkdir()
    (d / module).write_bytes((EXAMPLES / module).read_bytes())
    (d / "Enarx.toml").write_text(config)
    return d


def _keep_state(host: ManagerHandle, keep_id: str) -> tuple[str, int | None]:
    with HostClient(host.url, token=host.token) as client:
        k = client.get_keep(keep_id)
    return k.state, k.exit_code


# -- library ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_steward", [False, True], ids=["ra-tls", "steward"])
def test_deploy_hello_streams_output_and_exit_code(
    host: ManagerHandle, recorder: RelayRecorder, tmp_path: Path, with_steward: bool
) -> None:
    with running_steward() if with_steward else contextlib.nullcontext() as steward:
        result, out, err = deploy_captured(
            Workload.load(EXAMPLES / "hello.wasm"), deploy_options(host, steward, insecure=True)
        )
        assert (result.exit_code, out, err) == (0, b"Hello, world!\n", b"")
        assert result.error is None and result.message is None
        ident = result.identity
        assert ident.via == ("steward" if with_steward else "ra-tls")
        assert ident.platform == "nil" and ident.insecure
        assert ident.measurement == runtime_measurement()
        cert = load_peer_certificate(ident.certificate_der)
        if steward is not None:
            verify_issued(cert, steward.ca)
            assert ident.policy == "development (client), dev (Steward)"
        else:
            assert ident.policy == "development"
    # The Keep ran once and ended with the workload's exit code.
    wait_until(lambda: _keep_state(host, result.keep.id) == ("exited", 0), what="Keep exit")
    # The relay carried only TLS records: the workload's output never crossed it in clear.
    assert b"Hello, world!" not in recorder.carried()


def test_relay_never_sees_the_module_or_the_output(
    host: ManagerHandle, recorder: RelayRecorder, tmp_path: Path
) -> None:
    marker = secrets.token_hex(16).encode()
    module = tmp_path / "marked.wasm"
    module.write_bytes(marked_module((EXAMPLES / "argsenv.wasm").read_bytes(), marker))
    config = tmp_path / "Enarx.toml"
    config.write_text(f'args = ["{marker.decode()}"]\n[env]\nSECRET = "{marker.decode()}"\n')
    result, out, _ = deploy_captured(
        Workload.load(module, config_path=config), deploy_options(host, None, insecure=True)
    )
    assert result.exit_code == 0
    assert f"argv[1]={marker.decode()}".encode() in out
    assert f"env SECRET={marker.decode()}".encode() in out
    # The module (~192 KiB of marker) went through the relay, but only as ciphertext.
    assert recorder.bytes_to_keep() > 192 * 1024
    assert marker not in recorder.carried()
    assert marker[:8] not in recorder.carried()


def test_config_args_and_exit_code(host: ManagerHandle, tmp_path: Path) -> None:
    d = _workload_dir(tmp_path, "exitcode.wasm", 'args = ["42"]\n')
    result, out, err = deploy_captured(Workload.load(d), deploy_options(host, None, insecure=True))
    assert (result.exit_code, out, err, result.error) == (42, b"", b"", None)


def test_config_args_and_env_reach_the_workload(host: ManagerHandle, tmp_path: Path) -> None:
    d = _workload_dir(
        tmp_path,
        "argsenv.wasm",
        'args = ["--greeting", "hello world"]\n[env]\nLANGUAGE = "en"\n',
    )
    result, out, _ = deploy_captured(Workload.load(d), deploy_options(host, None, insecure=True))
    assert result.exit_code == 0
    assert out.decode().splitlines() == [
        "argc=3",
        "argv[0]=argsenv.wasm",  # the module's name, as with `donjon run`
        "argv[1]=--greeting",
        "argv[2]=hello world",
        "env FD_COUNT=3",
        "env FD_NAMES=stdin:stdout:stderr",
        "env LANGUAGE=en",
    ]


def test_library_args_follow_the_config_args(host: ManagerHandle, tmp_path: Path) -> None:
    d = _workload_dir(tmp_path, "argsenv.wasm", 'args = ["from-config"]\n')
    workload = Workload.load(d, args=["--flag", "two words", "-"])
    result, out, _ = deploy_captured(workload, deploy_options(host, None, insecure=True))
    assert result.exit_code == 0
    assert out.decode().splitlines()[:5] == [
        "argc=5",
        "argv[0]=argsenv.wasm",
        "argv[1]=from-config",
        "argv[2]=--flag",
        "argv[3]=two words",
    ]


def test_without_stdin_the_workload_sees_eof(host: ManagerHandle) -> None:
    # deploy(stdin=None) sends stdin-eof right after the workload frame: a filter reads nothing.
    result, out, err = deploy_captured(
        Workload.load(EXAMPLES / "rot13.wasm"), deploy_options(host, None, insecure=True)
    )
    assert (result.exit_code, out, err) == (0, b"", b"")


def test_stdin_reaches_the_workload(host: ManagerHandle, recorder: RelayRecorder) -> None:
    secret = b"Attack at dawn, " + secrets.token_hex(8).encode() + b"\n"
    result, out, _ = deploy_captured(
        Workload.load(EXAMPLES / "rot13.wasm"),
        deploy_options(host, None, insecure=True),
        stdin=io.BytesIO(secret),
    )
    assert result.exit_code == 0
    assert out == secret.translate(ROT13)
    assert secret.strip() not in recorder.carried()  # stdin crossed the relay encrypted


ROT13 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)


def test_large_stdin_is_streamed_not_buffered(tmp_path: Path) -> None:
    # 24 MiB: more than the 16 MiB a Keep used to buffer before running the workload, and 24
    # times what it holds now (STDIN_BUFFER_BYTES); it flows through cat.wasm and back.
    from donjon.keep.agent import STDIN_BUFFER_BYTES

    data = os.urandom(24 * 1024 * 1024)
    assert len(data) > 20 * STDIN_BUFFER_BYTES
    with running_manager(tmp_path / "host") as plain:  # no recorder: it would keep 48 MiB
        result, out, err = deploy_captured(
            Workload.load(EXAMPLES / "cat.wasm"),
            deploy_options(plain, None, insecure=True),
            stdin=io.BytesIO(data),
        )
    assert (result.exit_code, err) == (0, b"")
    assert out == data


def test_output_streams_while_stdin_is_still_open_and_a_stuck_read_meets_the_deadline(
    host: ManagerHandle, tmp_path: Path
) -> None:
    # cat.wasm echoes a first 64 KiB block while the client's stdin stays open; then it blocks
    # in a read no epoch can interrupt, and the Keep's watchdog ends it at the deadline.
    d = _workload_dir(tmp_path, "cat.wasm", "[limits]\ntimeout_s = 2.0\n")
    read_end, write_end = os.pipe()
    block = os.urandom(64 * 1024)
    os.write(write_end, block)
    out = _Arrivals()
    stdin = os.fdopen(read_end, "rb")
    try:
        started = time.monotonic()
        result = deploy(
            Workload.load(d),
            deploy_options(host, None, insecure=True),
            stdout=out,
            stderr=io.BytesIO(),
            stdin=stdin,
        )
        elapsed = time.monotonic() - started
    finally:
        # deploy's stdin thread may still be in a read: end the pipe first, then close it.
        os.close(write_end)
        stdin.close()
    assert out.getvalue() == block
    assert out.first is not None and out.first - started < 1.9  # before the deadline
    assert result.exit_code == 137
    assert result.error == "DeadlineError"
    assert result.message == (
        "deadline of 2.0 s reached: cat.wasm was stopped while blocked in a host call"
    )
    assert 2.0 <= elapsed < 10
    wait_until(lambda: _keep_state(host, result.keep.id) == ("exited", 137), what="Keep exit")


class _Arrivals(io.BytesIO):
    """A stdout that notes when its first byte came."""

    first: float | None = None

    def write(self, data: Any) -> int:
        if self.first is None and data:
            self.first = time.monotonic()
        return super().write(data)


class _Untouchable(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("stdin was read although the workload has none")


def test_stdin_is_not_read_for_a_workload_without_one(host: ManagerHandle, tmp_path: Path) -> None:
    d = _workload_dir(
        tmp_path,
        "hello.wasm",
        '[[files]]\nkind = "null"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n',
    )
    workload = Workload.load(d)
    assert not workload.reads_stdin
    result, out, _ = deploy_captured(
        workload, deploy_options(host, None, insecure=True), stdin=_Untouchable()
    )
    assert (result.exit_code, out) == (0, b"Hello, world!\n")


def test_trap_exits_134_with_the_reason(host: ManagerHandle) -> None:
    result, out, _ = deploy_captured(
        Workload.load(EXAMPLES / "trap.wasm"), deploy_options(host, None, insecure=True)
    )
    assert result.exit_code == 134
    assert out == b"about to trap\n"
    assert result.error == "GuestTrapError"  # a TrapError
    assert result.message is not None
    assert "trap.wasm trapped: wasm `unreachable` instruction executed" in result.message
    wait_until(lambda: _keep_state(host, result.keep.id) == ("exited", 134), what="Keep exit")


def test_deadline_exits_137(host: ManagerHandle, tmp_path: Path) -> None:
    d = _workload_dir(tmp_path, "spin.wasm", "[limits]\ntimeout_s = 0.5\n")
    result, out, _ = deploy_captured(Workload.load(d), deploy_options(host, None, insecure=True))
    assert result.exit_code == 137
    assert out == b"spinning\n"
    assert result.error == "DeadlineError"  # a LimitError
    assert result.message == "deadline of 0.5 s reached: spin.wasm was stopped"


@pytest.mark.parametrize("with_steward", [False, True], ids=["ra-tls", "steward"])
def test_nil_keep_refused_without_insecure_and_nothing_sent(
    host: ManagerHandle, recorder: RelayRecorder, tmp_path: Path, with_steward: bool
) -> None:
    marker = secrets.token_hex(16).encode()
    module = tmp_path / "marked.wasm"
    module.write_bytes(marked_module((EXAMPLES / "hello.wasm").read_bytes(), marker))
    with running_steward() if with_steward else contextlib.nullcontext() as steward:
        with pytest.raises(InsecureKeepError, match="Pass --insecure") as caught:
            deploy_captured(Workload.load(module), deploy_options(host, steward))
    assert "no confidentiality or integrity against the host" in caught.value.diagnostics()
    # Only the handshake went to the Keep: far fewer bytes than the 192 KiB module.
    assert 0 < recorder.bytes_to_keep() < 8 * 1024
    assert marker not in recorder.carried()
    # The client stopped the Keep it refused: it does not linger on the host.
    [keep] = _list(host)
    assert (keep.state, keep.detail) == ("stopped", "stopped by its owner")


def test_keep_refused_by_steward_fails_fast_with_the_reason(host: ManagerHandle) -> None:
    # Steward's production policy refuses nil evidence: the Keep ends before it listens. The
    # client learns why from the host within a second or so (not the relay's 15 s timeout).
    with running_steward(StewardPolicy.production()) as steward:
        started = time.monotonic()
        with pytest.raises(KeepLaunchError) as caught:
            deploy_captured(
                Workload.load(EXAMPLES / "hello.wasm"), deploy_options(host, steward, insecure=True)
            )
        assert time.monotonic() - started < 10
    message = caught.value.diagnostics()
    assert "ended before it could be verified" in message
    assert "not allowed by policy 'production'" in message
    assert "nothing was sent" in message


def test_cli_keep_refused_by_steward(host: ManagerHandle, tmp_path: Path) -> None:
    with running_steward(StewardPolicy.production()) as steward:
        ca = steward.write_ca(tmp_path / "ca.crt")
        result = run_donjon(
            _cli_deploy(
                host,
                str(EXAMPLES / "hello.wasm"),
                *("--steward", steward.url, "--ca", str(ca), "--insecure"),
            )
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_error_line(result, "ended before it could be verified", "policy 'production'")


def test_steward_without_ca_is_a_usage_error(host: ManagerHandle, steward: StewardHandle) -> None:
    options = DeployOptions(host=host.url, token=host.token, steward=steward.url, insecure=True)
    with pytest.raises(UsageError, match="--ca FILE"):
        deploy_captured(Workload.load(EXAMPLES / "hello.wasm"), options)
    assert _list(host) == []  # refused before asking for a Keep


# -- CLI (a process each) ----------------------------------------------------------------------


def _cli_deploy(host: ManagerHandle, *args: str) -> list[str]:
    return ["deploy", *args, "--host", host.url, "--token-file", str(host.token_file)]


def test_cli_deploy_ra_tls(host: ManagerHandle) -> None:
    result = run_donjon(_cli_deploy(host, str(EXAMPLES / "hello.wasm"), "--insecure"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n"
    lines = result.stderr.splitlines()
    assert lines[0].startswith(INSECURE_WARNING)
    assert "verified via ra-tls: platform nil (INSECURE: no TEE)" in lines[1]
    assert "sending hello.wasm" in lines[1]
    assert len(lines) == 2


def test_cli_deploy_with_steward(
    host: ManagerHandle, steward: StewardHandle, tmp_path: Path
) -> None:
    ca = steward.write_ca(tmp_path / "ca.crt")
    result = run_donjon(
        _cli_deploy(
            host,
            str(EXAMPLES / "hello.wasm"),
            "--steward",
            steward.url,
            "--ca",
            str(ca),
            "--insecure",
        )
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, world!\n"
    assert "verified via steward: platform nil (INSECURE: no TEE)" in result.stderr
    assert "policy development (client), dev (Steward)" in result.stderr


def test_cli_deploy_trap_and_deadline_exit_codes(host: ManagerHandle, tmp_path: Path) -> None:
    trap = run_donjon(_cli_deploy(host, str(EXAMPLES / "trap.wasm"), "--insecure"))
    assert trap.returncode == 134
    assert trap.stdout == "about to trap\n"
    assert_one_error_line(trap, "trap.wasm trapped")
    cfg = tmp_path / "limits.toml"
    cfg.write_text("[limits]\ntimeout_s = 0.5\n")
    spin = run_donjon(
        _cli_deploy(host, str(EXAMPLES / "spin.wasm"), "--wasmcfgfile", str(cfg), "--insecure")
    )
    assert spin.returncode == 137
    assert spin.stdout == "spinning\n"
    assert_one_error_line(spin, "deadline of 0.5 s reached")


def test_cli_refuses_nil_without_insecure(host: ManagerHandle, recorder: RelayRecorder) -> None:
    result = run_donjon(_cli_deploy(host, str(EXAMPLES / "hello.wasm")))
    assert result.returncode == 1
    assert result.stdout == ""
    assert INSECURE_WARNING not in result.stderr
    assert_one_error_line(result, "the Keep runs on 'nil'", "Pass --insecure")
    assert recorder.bytes_to_keep() < 8 * 1024
    [keep] = _list(host)
    assert keep.state == "stopped"


def test_cli_stdin_and_args(host: ManagerHandle, tmp_path: Path) -> None:
    rot13 = run_donjon(
        _cli_deploy(host, str(EXAMPLES / "rot13.wasm"), "--insecure"), input_bytes=b"hi\n"
    )
    assert (rot13.returncode, rot13.stdout) == (0, "uv\n"), rot13.stderr
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('args = ["from-config"]\n')
    argsenv = run_donjon(
        [
            *_cli_deploy(host, str(EXAMPLES / "argsenv.wasm"), "--wasmcfgfile", str(cfg)),
            "--insecure",
            "--",
            "--flag",
            "two words",
        ]
    )
    assert argsenv.returncode == 0, argsenv.stderr
    assert argsenv.stdout.splitlines()[:5] == [
        "argc=4",
        "argv[0]=argsenv.wasm",
        "argv[1]=from-config",
        "argv[2]=--flag",
        "argv[3]=two words",
    ]


def test_refused_keep_is_stopped_and_its_loader_ends(host: ManagerHandle) -> None:
    # Without --insecure the client refuses the nil Keep after the handshake, then stops it.
    with pytest.raises(InsecureKeepError):
        deploy_captured(Workload.load(EXAMPLES / "hello.wasm"), deploy_options(host, None))
    [keep] = _list(host)
    assert (keep.state, keep.detail) == ("stopped", "stopped by its owner")
    loader = int((host.keep_dir(keep.id) / "loader.pid").read_text().split()[0])
    assert loader == host.manager.get(_admin(), keep.id).loader_pid
    wait_until(lambda: not pid_alive(loader), timeout=5, what="the loader's exit")
    assert not (host.keep_dir(keep.id) / "keep.sock").exists()  # its runtime is gone too


def _admin() -> Any:
    from donjon.host.auth import Principal

    return Principal("admin")


def test_cli_usage_errors_exit_2(host: ManagerHandle, tmp_path: Path) -> None:
    no_ca = run_donjon(
        _cli_deploy(host, str(EXAMPLES / "hello.wasm"), "--steward", "http://127.0.0.1:9")
    )
    assert no_ca.returncode == 2
    assert_one_error_line(no_ca, "--ca FILE")
    not_wasm = tmp_path / "x.wasm"
    not_wasm.write_bytes(b"#!/bin/sh\n")
    bad = run_donjon(_cli_deploy(host, str(not_wasm), "--insecure"))
    assert bad.returncode == 2
    assert_one_error_line(bad, "is not a WebAssembly module")
    assert _list(host) == []


# -- helpers -----------------------------------------------------------------------------------


def _list(host: ManagerHandle) -> list[KeepInfo]:
    with HostClient(host.url, token=host.token) as client:
        return list(client.list_keeps())


# -- the workload's own TLS sockets ------------------------------------------------------------


@pytest.mark.parametrize("with_steward", [False, True], ids=["ra-tls", "steward"])
def test_workload_tls_listener_presents_the_verified_keep_certificate(
    host: ManagerHandle, recorder: RelayRecorder, tmp_path: Path, with_steward: bool
) -> None:
    config = tmp_path / "Enarx.toml"
    config.write_text(ECHO_TLS_CONFIG)
    workload = Workload.load(EXAMPLES / "echo_server.wasm", config_path=config, args=["-c", "1"])
    verified: list[KeepIdentity] = []
    outcome: list[DeployResult | BaseException] = []
    stdout, stderr = WatchedStream(), WatchedStream()

    def on_verified(_keep: KeepInfo, identity: KeepIdentity) -> None:
        verified.append(identity)

    with running_steward() if with_steward else contextlib.nullcontext() as steward:
        options = deploy_options(host, steward, insecure=True)

        def run() -> None:
            try:
                outcome.append(
                    deploy(workload, options, stdout=stdout, stderr=stderr, on_verified=on_verified)  # type: ignore[arg-type]
                )
            except BaseException as e:  # reported by the assertion below
                outcome.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # The listener's notice reaches the client on the workload's stderr.
        port = int(stderr.wait_for(LISTENING, LISTEN_WAIT_S).group(1))
        assert len(verified) == 1
        identity = verified[0]

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # a nil Keep has no DNS name; the certificate is pinned below
        if steward is not None:
            # Anyone who trusts Steward's CA can talk to the workload: the chain verifies.
            ctx.load_verify_locations(cadata=certificate_pem(steward.ca).decode())
        else:
            ctx.verify_mode = ssl.CERT_NONE  # self-signed RA-TLS; pinned to what deploy verified
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30)) as conn:
            presented = conn.getpeercert(binary_form=True)
            assert echo_once(conn, b"attested echo") == b"attested echo"
        assert presented is not None
        if steward is None:
            assert presented == identity.certificate_der  # the RA-TLS certificate verified
        else:
            # Steward certified the same key again, now naming the workload that runs.
            served = x509.load_der_x509_certificate(presented)
            checked = x509.load_der_x509_certificate(identity.certificate_der)
            assert certificate_spki(served) == certificate_spki(checked)
            names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert names.get_values_for_type(x509.UniformResourceIdentifier) == [workload.identity]
        thread.join(LISTEN_WAIT_S)
    assert not thread.is_alive(), "deploy did not return after the workload's one connection"
    result = outcome[0]
    assert isinstance(result, DeployResult), result
    assert result.exit_code == 0, bytes(stderr.data)
    assert bytes(stdout.data) == b"echo_server: served 1 connections, 13 bytes\n"
    assert identity.via == ("steward" if with_steward else "ra-tls")
    # The workload's bytes went straight to the Keep's listener, never through the relay.
    assert b"attested echo" not in recorder.carried()

"""The keep manager as a real service: tokens, ownership, request limits, the ``donjon keep`` CLI,
stopping Keeps, and surviving its own restart (``donjon host serve`` as a process) without
leaking a single process.
"""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from donjon.client.host_api import HostClient, HostRefusedError, KeepInfo
from donjon.errors import NotFoundError
from donjon.host.auth import Principal
from donjon.wire.cbor import decode, encode
from tests.integration.deploy_support import (
    EXAMPLES,
    ManagerHandle,
    assert_one_error_line,
    children_of,
    keep_processes,
    pid_alive,
    run_donjon,
    run_in_keep,
    running_manager,
    start_service,
    wait_for_keep_processes,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dev_key")]

CBOR = {"content-type": "application/cbor"}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[ManagerHandle]:
    with running_manager(tmp_path / "host") as handle:
        yield handle


def _create(host: ManagerHandle, token: str | None = None) -> tuple[KeepInfo, bytes]:
    nonce = secrets.token_bytes(32)
    with HostClient(host.url, token=token or host.token) as client:
        return client.create_keep(backend="nil", nonce=nonce), nonce


def _post(
    host: ManagerHandle, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{host.url}/v1/keeps",
        content=body,
        headers={"authorization": f"Bearer {host.token}", **CBOR, **(headers or {})},
    )


def _error(response: httpx.Response) -> tuple[int, str, str]:
    assert response.headers["content-type"] == "application/cbor"
    body = decode(response.content)
    return response.status_code, body["error"], body["reason"]


# -- tokens and ownership ------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer " + "0" * 64, "Basic YWRtaW46eA==", "Bearer " + "a" * 300],
    ids=["none", "empty", "unknown", "basic", "too-long"],
)
def test_requests_without_a_valid_token_get_401(
    host: ManagerHandle, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    for method, path in [("GET", "/v1/keeps"), ("GET", "/v1/keeps/0123456789abcdef")]:
        response = httpx.request(method, f"{host.url}{path}", headers=headers)
        status, error, reason = _error(response)
        assert (status, error) == (401, "AuthenticationError")
        assert "token" in reason
    response = httpx.post(f"{host.url}/v1/keeps", content=b"\xa0", headers={**headers, **CBOR})
    assert response.status_code == 401
    assert list(host.manager.list_keeps(Principal("admin"))) == []


def test_the_client_reports_a_refused_token(host: ManagerHandle) -> None:
    with HostClient(host.url, token="f" * 64) as client, pytest.raises(HostRefusedError) as e:
        client.list_keeps()
    assert "refused the token" in e.value.diagnostics()
    assert "f" * 64 not in e.value.diagnostics()


def test_only_the_creator_sees_inspects_relays_to_or_stops_a_keep(host: ManagerHandle) -> None:
    mallory = host.add_token("mallory")
    keep, _ = _create(host)
    with HostClient(host.url, token=mallory) as client:
        assert client.list_keeps() == []
        with pytest.raises(NotFoundError):
            client.get_keep(keep.id)
        with pytest.raises(NotFoundError):
            client.stop_keep(keep.id)
        # The relay refuses the WebSocket handshake before reaching the Keep: the same 404 as
        # for a Keep that does not exist, with the close code it stands for.
        with pytest.raises(InvalidStatus) as refused:
            connect(
                client.relay_url(keep.id),
                additional_headers={"authorization": f"Bearer {mallory}"},
            )
        assert refused.value.response.status_code == 404
        body = decode(refused.value.response.body)
        assert (body["error"], body["close_code"]) == ("NotFoundError", 4404)
        assert body["reason"] == f"no Keep {keep.id}"
    # The same 404 as for a Keep that does not exist: nothing is revealed.
    response = httpx.get(
        f"{host.url}/v1/keeps/{keep.id}", headers={"authorization": f"Bearer {mallory}"}
    )
    missing = httpx.get(
        f"{host.url}/v1/keeps/{'0' * 16}", headers={"authorization": f"Bearer {mallory}"}
    )
    assert _error(response)[:2] == _error(missing)[:2] == (404, "NotFoundError")
    with HostClient(host.url, token=host.token) as client:
        assert client.get_keep(keep.id).state == "running"
        assert [k.id for k in client.list_keeps()] == [keep.id]


def test_relay_needs_a_token(host: ManagerHandle) -> None:
    keep, _ = _create(host)
    with HostClient(host.url, token=host.token) as client:
        url = client.relay_url(keep.id)
    with pytest.raises(InvalidStatus) as refused:
        connect(url)
    assert refused.value.response.status_code == 401
    body = decode(refused.value.response.body)
    assert (body["error"], body["close_code"]) == ("AuthenticationError", 4401)
    assert "token" in body["reason"]


def test_relay_refusals_reach_the_client_with_their_reason(host: ManagerHandle) -> None:
    from donjon.client.channel import KeepChannel, RelayRefusedError

    keep, _ = _create(host)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with HostClient(host.url, token=host.token) as client:
        url = client.relay_url(keep.id)
        client.stop_keep(keep.id)
        with pytest.raises(RelayRefusedError) as finished:
            KeepChannel(url, token=host.token, context=ctx)
        with pytest.raises(RelayRefusedError) as missing:
            KeepChannel(client.relay_url("0" * 16), token=host.token, context=ctx)
        with pytest.raises(RelayRefusedError) as no_token:
            KeepChannel(url, token="0" * 64, context=ctx)
    assert finished.value.status_code == 410
    assert finished.value.message == (
        f"the keep manager refused the relay (HTTP 410: the Keep {keep.id} has finished "
        "(stopped: stopped by its owner))"
    )
    assert missing.value.status_code == 404
    assert "(HTTP 404: no Keep 0000000000000000)" in missing.value.message
    assert no_token.value.status_code == 401
    assert "(HTTP 401: " in no_token.value.message and "0" * 64 not in no_token.value.message


# -- request limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (encode({"nonce": bytes(32), "x": 1}), {}, 400, "unknown fields ['x']"),
        (encode({"backend": "nil"}), {}, 400, "nonce must be 16..64 bytes"),
        (encode({"nonce": bytes(8)}), {}, 400, "nonce must be 16..64 bytes"),
        (encode({"nonce": bytes(65)}), {}, 400, "nonce must be 16..64 bytes"),
        (encode([1, 2]), {}, 400, "must be a CBOR map"),
        (b"\xff\x00", {}, 400, "not valid CBOR"),
        (encode({"nonce": bytes(32)}) + b"\x00", {}, 400, "trailing bytes"),
        (encode({"nonce": bytes(32), "limits": {"cpu": 1}}), {}, 400, "only memory_mib"),
        (encode({"nonce": bytes(32), "limits": {"timeout_s": -1}}), {}, 400, "positive"),
        (encode({"nonce": bytes(32), "limits": {"timeout_s": True}}), {}, 400, "positive"),
        (encode({"nonce": bytes(32), "steward": "x" * 4096}), {}, 400, "must be a URL"),
        (encode({"nonce": bytes(32)}), {"content-type": "application/json"}, 400, "send the"),
        (encode({"nonce": bytes(32), "pad": bytes(300 * 1024)}), {}, 400, "exceeds 262144"),
        (encode({"nonce": bytes(32), "backend": "sev-snp"}), {}, 409, "not available"),
    ],
    ids=[
        "unknown-field",
        "no-nonce",
        "short-nonce",
        "long-nonce",
        "not-a-map",
        "not-cbor",
        "trailing",
        "unknown-limit",
        "negative-limit",
        "bool-limit",
        "long-steward",
        "json",
        "oversized",
        "backend",
    ],
)
def test_bad_create_requests_are_refused_and_start_nothing(
    host: ManagerHandle, body: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = _post(host, body, headers)
    got_status, _, reason = _error(response)
    assert got_status == status
    assert fragment in reason
    assert list((host.state_dir / "keeps").iterdir()) == []


def test_unknown_and_malformed_keep_ids_are_404(host: ManagerHandle) -> None:
    auth = {"authorization": f"Bearer {host.token}"}
    for keep_id in ["0123456789abcdef", "ZZZ", "..%2F..%2Ftokens", "0" * 17]:
        response = httpx.get(f"{host.url}/v1/keeps/{keep_id}", headers=auth)
        assert response.status_code == 404, keep_id


# -- the CLI ---------------------------------------------------------------------------------


def test_keep_list_status_stop_cli(host: ManagerHandle) -> None:
    keep, _ = _create(host)
    opts = ["--host", host.url, "--token-file", str(host.token_file)]
    pids = wait_for_keep_processes(host.keep_dir(keep.id))

    listed = run_donjon(["keep", "list", *opts])
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "BACKEND", "STATE", "AGE", "EXIT", "DETAIL"]
    assert row.split()[:3] == [keep.id, "nil", "running"]

    status = run_donjon(["keep", "status", keep.id, "--json", *opts])
    assert status.returncode == 0
    assert '"state": "running"' in status.stdout
    assert f'"id": "{keep.id}"' in status.stdout

    stopped = run_donjon(["keep", "stop", keep.id, *opts])
    assert stopped.returncode == 0
    assert stopped.stdout.split()[:3] == [keep.id, "nil", "stopped"]
    assert "stopped by its owner" in stopped.stdout
    # Stopping killed the loader and the keep runtime.
    assert not any(pid_alive(p) for p in pids)

    again = run_donjon(["keep", "list", *opts])
    assert again.stdout.splitlines()[1].split()[2] == "stopped"

    missing = run_donjon(["keep", "status", "0" * 16, *opts])
    assert missing.returncode == 1
    assert_one_error_line(missing, "no Keep")
    no_token = run_donjon(["keep", "list", "--host", host.url])
    assert no_token.returncode == 2
    assert_one_error_line(no_token, "no client token")


def test_host_token_cli_works_on_a_running_manager(host: ManagerHandle, tmp_path: Path) -> None:
    _create(host)
    out = tmp_path / "alice.token"
    made = run_donjon(
        ["host", "token", "alice", "--state-dir", str(host.state_dir), "--out", str(out)]
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""
    assert made.stderr == f"token for alice written to {out}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    token = out.read_text().strip()
    assert token not in (host.state_dir / "tokens").read_text()
    # No restart needed: the running manager knows alice now, and shows her only her Keeps.
    listed = run_donjon(["keep", "list", "--host", host.url, "--token-file", str(out)])
    assert (listed.returncode, listed.stdout) == (0, "no Keeps\n")
    again = run_donjon(["host", "token", "alice", "--state-dir", str(host.state_dir)])
    assert again.returncode == 3
    assert_one_error_line(again, "a token named 'alice' exists already")


def test_keep_list_empty_and_json(host: ManagerHandle) -> None:
    opts = ["--host", host.url, "--token-file", str(host.token_file)]
    assert run_donjon(["keep", "list", *opts]).stdout == "no Keeps\n"
    assert run_donjon(["keep", "list", "--json", *opts]).stdout == "[]\n"


def test_stopping_a_keep_kills_loader_and_runtime(host: ManagerHandle) -> None:
    keep, _ = _create(host)
    record = host.manager.get(Principal("admin"), keep.id)
    pids = wait_for_keep_processes(host.keep_dir(keep.id))
    assert record.loader_pid in pids
    with HostClient(host.url, token=host.token) as client:
        stopped = client.stop_keep(keep.id)
        assert (stopped.state, stopped.detail) == ("stopped", "stopped by its owner")
        assert client.stop_keep(keep.id).state == "stopped"  # idempotent
    assert not any(pid_alive(p) for p in pids)


def test_keeps_created_at_once_all_start_and_all_stop(host: ManagerHandle) -> None:
    # Concurrent creates and lists must not reap each other's Keeps while they start (a race
    # benchmarks/bench_deploy.py found with 20 Keeps: refused relays, unstoppable processes).
    count = 6
    with ThreadPoolExecutor(count) as pool:
        created = list(pool.map(lambda _: _create(host)[0], range(count)))
    pids: list[int] = []
    with HostClient(host.url, token=host.token) as client:
        assert sorted(k.id for k in client.list_keeps()) == sorted(k.id for k in created)
        for keep in created:
            info = client.get_keep(keep.id)
            assert (info.state, info.detail) == ("running", None)
            pids += wait_for_keep_processes(host.keep_dir(keep.id))
        for keep in created:
            assert client.stop_keep(keep.id).state == "stopped"
    assert len(set(pids)) == 2 * count  # one loader and one runtime each, none shared
    assert not any(pid_alive(p) for p in pids)


def test_keeps_created_at_once_start_from_as_many_warm_spares(tmp_path: Path) -> None:
    from donjon.host.launcher import ProcessLauncher

    launcher = ProcessLauncher(spares=3)
    try:
        with running_manager(tmp_path / "host", launcher=launcher) as host:
            assert launcher.wait_for_spares(3, timeout_s=60)
            spares = set(launcher.spare_pids)
            with ThreadPoolExecutor(3) as pool:
                created = list(pool.map(lambda _: _create(host), range(3)))
            loaders = set()
            for keep, _ in created:
                pids = wait_for_keep_processes(host.keep_dir(keep.id))
                record = host.manager.get(Principal("admin"), keep.id)
                assert record.loader_pid in pids
                loaders.add(record.loader_pid)
                line = _first_log_line(host.keep_dir(keep.id))
                assert line.startswith("donjon loader: started from a warm spare ("), line
            assert loaders == spares  # each Keep got its own warm spare
            keep, nonce = created[0]
            result = run_in_keep(
                host.url, host.token, keep.id, nonce, (EXAMPLES / "hello.wasm").read_bytes()
            )
            assert (result.exit_code, result.stdout) == (0, b"Hello, world!\n")
            # The pool refills to three, with new processes.
            assert launcher.wait_for_spares(3, timeout_s=60)
            assert not set(launcher.spare_pids) & spares
            assert launcher.status().failures == 0
    finally:
        launcher.close()
    assert launcher.spare_pids == ()


def test_concurrent_creates_respect_the_per_owner_limit(tmp_path: Path) -> None:
    from donjon.host.core import KeepManager
    from donjon.host.launcher import ProcessLauncher
    from donjon.host.store import KeepStore

    launcher = ProcessLauncher()
    manager = KeepManager(KeepStore(tmp_path / "hs"), launcher, max_keeps_per_owner=3)
    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(
                pool.map(
                    lambda _: _try_create(manager),
                    range(8),
                )
            )
        assert outcomes.count("created") == 3
        assert sum("already has 3 Keeps" in o for o in outcomes) == 5
    finally:
        for record in manager.list_keeps(Principal("admin")):
            manager.stop(Principal("admin"), record.id)
        launcher.close()


def _try_create(manager: Any) -> str:
    from donjon.errors import ConfigError
    from donjon.host.core import CreateKeep

    try:
        manager.create(Principal("admin"), CreateKeep(backend="nil", nonce=secrets.token_bytes(32)))
    except ConfigError as e:
        return e.message
    return "created"


# -- restarts ------------------------------------------------------------------------------


def test_restart_reattaches_live_keeps_and_reaps_dead_ones(tmp_path: Path) -> None:
    state = tmp_path / "hs"
    first = start_service(
        ["host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state)],
        tmp_path / "host1.log",
    )
    try:
        token = (state / "admin.token").read_text().strip()
        with HostClient(first.url, token=token) as client:
            nonce_a = secrets.token_bytes(32)
            keep_a = client.create_keep(backend="nil", nonce=nonce_a)
            keep_b = client.create_keep(backend="nil", nonce=secrets.token_bytes(32))
        dir_a, dir_b = (state / "keeps" / k.id for k in (keep_a, keep_b))
        pids_a = wait_for_keep_processes(dir_a)
        pids_b = wait_for_keep_processes(dir_b)
    finally:
        assert first.terminate() == 0
    try:
        # The manager is gone; its Keeps are not (they are detached on purpose).
        assert keep_processes(dir_a) == pids_a
        # While it is down, Keep B's loader dies (OOM killer, an operator's kill -9, ...).
        loader_b = _loader_pid(state, keep_b.id)
        assert loader_b in pids_b
        os.kill(loader_b, signal.SIGKILL)
        # The kernel takes B's runtime down with its loader (PR_SET_PDEATHSIG): no orphan.
        wait_until(lambda: not any(pid_alive(p) for p in pids_b), what="B's processes gone")

        second = start_service(
            ["host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state)],
            tmp_path / "host2.log",
        )
        try:
            assert "re-attached 1 running Keeps, reaped 1" in second.stderr()
            assert "admin token written" not in second.stderr()  # the old token still works
            with HostClient(second.url, token=token) as client:
                b = client.get_keep(keep_b.id)
                assert (b.state, b.detail) == ("failed", "keep loader vanished")
                assert client.get_keep(keep_a.id).state == "running"
            # Keep A survived the restart and is reachable through the new manager's relay,
            # still bound to the nonce its client gave when it was created.
            result = run_in_keep(
                second.url, token, keep_a.id, nonce_a, (EXAMPLES / "hello.wasm").read_bytes()
            )
            assert (result.exit_code, result.stdout, result.via) == (
                0,
                b"Hello, world!\n",
                "ra-tls",
            )
            with HostClient(second.url, token=token) as client:
                wait_until(lambda: client.get_keep(keep_a.id).state == "exited", what="A exits")
                assert client.get_keep(keep_a.id).exit_code == 0
        finally:
            assert second.terminate() == 0
    finally:
        for pid in pids_a + pids_b:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in pids_a + pids_b), what="no Keep process")


def test_restart_with_keeps_still_running_then_stop_them(tmp_path: Path) -> None:
    state = tmp_path / "hs"
    args = ["host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state)]
    first = start_service([*args, "--spares", "2"], tmp_path / "host1.log")
    try:
        token = (state / "admin.token").read_text().strip()
        with HostClient(first.url, token=token) as client:
            keep = client.create_keep(backend="nil", nonce=secrets.token_bytes(32))
        pids = wait_for_keep_processes(state / "keeps" / keep.id)
        # The pool refills behind the Keep: two spares again. (The Keep's loader, a spare
        # before, is still a child started with --spare.)
        assert set(pids) & set(_spares_of(first.proc.pid))

        def idle_spares() -> list[int]:
            return [p for p in _spares_of(first.proc.pid) if p not in pids]

        wait_until(lambda: len(idle_spares()) == 2, timeout=60, what="2 spares")
        spares = idle_spares()
    finally:
        first.terminate()
    # The spares ended with their manager; the Keep did not.
    wait_until(lambda: not any(pid_alive(p) for p in spares), timeout=30, what="the spares gone")
    assert keep_processes(state / "keeps" / keep.id) == pids
    second = start_service([*args, "--no-spare"], tmp_path / "host2.log")
    try:
        assert "re-attached 1 running Keeps, reaped 0" in second.stderr()
        assert _spares_of(second.proc.pid) == []  # --no-spare is --spares 0; nothing adopted
        # A re-attached loader is no child of this manager: it is found (by the pid and start
        # time in loader.pid) and stopped via /proc.
        with HostClient(second.url, token=token) as client:
            assert client.get_keep(keep.id).state == "running"
            assert client.stop_keep(keep.id).state == "stopped"
            # With no spare, a new Keep starts cold.
            cold = client.create_keep(backend="nil", nonce=secrets.token_bytes(32))
            wait_for_keep_processes(state / "keeps" / cold.id)
            assert _first_log_line(state / "keeps" / cold.id) == "donjon loader: started cold"
            assert client.stop_keep(cold.id).state == "stopped"
        # Gone, or in their last instants: an exiting process has no command line any more,
        # which is when the manager's check (and the stop) ends; the kernel finishes it.
        assert keep_processes(state / "keeps" / keep.id) == []
        wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5, what="exit")
    finally:
        second.terminate()


def test_a_killed_spare_is_replaced_and_a_stopped_manager_leaves_no_spare_behind(
    tmp_path: Path,
) -> None:
    state = tmp_path / "hs"
    service = start_service(
        ["host", "serve", "--listen", "127.0.0.1:0", "--state-dir", str(state), "--spares", "3"],
        tmp_path / "host.log",
    )
    try:
        wait_until(lambda: len(_spares_of(service.proc.pid)) == 3, timeout=60, what="3 spares")
        first = _spares_of(service.proc.pid)
        killed = first[0]
        [killed_runtime] = _runtimes_of([killed])
        os.kill(killed, signal.SIGKILL)  # an operator's kill -9, the OOM killer
        # Its runtime dies with it, the manager reaps it and starts another.
        wait_until(
            lambda: (
                len(_spares_of(service.proc.pid)) == 3
                and killed not in _spares_of(service.proc.pid)
            ),
            timeout=60,
            what="a replacement spare",
        )
        wait_until(
            lambda: not pid_alive(killed_runtime), timeout=30, what="the killed spare's runtime"
        )
        # The pool may start and discard an extra spare while it refills: wait for it to settle
        # with the two survivors and one newcomer.
        wait_until(
            lambda: len(now := _spares_of(service.proc.pid)) == 3 and set(first[1:]) < set(now),
            timeout=60,
            what="the two survivors and one new spare",
        )
        spares = _spares_of(service.proc.pid)
        runtimes = _runtimes_of(spares)
    finally:
        assert service.terminate() == 0
    assert not Path(f"/proc/{killed}").exists()  # reaped, not a zombie
    wait_until(
        lambda: not any(pid_alive(p) for p in spares + runtimes),
        timeout=30,
        what="every spare and runtime gone",
    )


def _spares_of(manager_pid: int) -> list[int]:
    """The manager's children started as spare loaders (``--spare``; some may have a Keep by
    now), by pid."""
    spares = []
    for pid in sorted(children_of(manager_pid)):
        try:
            if b"--spare" in Path(f"/proc/{pid}/cmdline").read_bytes():
                spares.append(pid)
        except OSError:
            continue  # it ended meanwhile
    return spares


def _runtimes_of(spares: list[int]) -> list[int]:
    """Wait until each spare loader has its keep runtime; their pids."""
    runtimes: list[int] = []
    for spare in spares:

        def started(spare: int = spare) -> bool:
            return len(children_of(spare)) == 1

        wait_until(started, timeout=60, what=f"the keep runtime of spare {spare}")
        runtimes += children_of(spare)
    return runtimes


def _first_log_line(keep_dir: Path) -> str:
    """How the Keep's loader started (the first line of its log)."""
    return (keep_dir / "loader.log").read_text().splitlines()[0]


def _loader_pid(state: Path, keep_id: str) -> int:
    record = decode((state / "keeps" / keep_id / "record.cbor").read_bytes())
    pid = record["loader_pid"]
    assert isinstance(pid, int) and pid_alive(pid)
    return pid

"""Steward's audit log: what each decision records, the chain, the signed checkpoints, what
tampering the verifier catches, several writers on one file, and ``steward audit verify``."""

from __future__ import annotations

import json
import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from donjon.cli.main import cli
from donjon.crypto.ca import CertificateAuthority
from donjon.errors import FreshnessError, PolicyError
from donjon.steward.audit import GENESIS, AuditLog, verify_log
from donjon.steward.config import DEV_POLICY_TOML, StewardPolicy
from donjon.steward.core import StewardCore
from donjon.steward.messages import SecretsRequest
from donjon.steward.secrets import SecretStore
from tests.unit.steward._support import Keep, PinnedClock, shared_ca

WORKLOAD = "donjon:workload:sha256:" + "ab" * 32


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _log(path: Path, every: int = 3) -> AuditLog:
    clock = PinnedClock()
    return AuditLog(path, shared_ca().sign_result, clock=clock.now, checkpoint_every=every)


# -- the file -------------------------------------------------------------------------------------


def test_records_are_chained_and_checkpoints_are_signed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with _log(path) as log:
        for n in range(7):
            log.record({"event": "issued", "n": n})
    lines = _lines(path)
    assert [line["event"] for line in lines] == [
        *["issued"] * 3, "checkpoint", *["issued"] * 3, "checkpoint", "issued", "checkpoint",
    ]  # fmt: skip
    assert [line["seq"] for line in lines] == list(range(10))
    assert lines[0]["prev"] == GENESIS
    assert path.stat().st_mode & 0o777 == 0o600
    report = verify_log(path.read_bytes(), shared_ca().certificate)
    assert report.intact, report.problems
    assert (report.records, report.checkpoints, report.unsigned_tail) == (7, 3, 0)
    assert report.events == {"issued": 7}


def test_lines_after_the_last_checkpoint_are_counted_as_unsigned(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _log(path, every=100)
    for n in range(4):
        log.record({"event": "refused", "n": n})
    report = verify_log(path.read_bytes(), shared_ca().certificate)  # before close
    assert report.intact and (report.checkpoints, report.unsigned_tail) == (0, 4)
    log.close()
    log.close()  # idempotent
    report = verify_log(path.read_bytes(), shared_ca().certificate)
    assert report.intact and (report.checkpoints, report.unsigned_tail) == (1, 0)


def _tampered(path: Path, change: object) -> list[str]:
    lines = path.read_bytes().splitlines()
    changed = change(lines)  # type: ignore[operator]
    return list(verify_log(b"\n".join(changed) + b"\n", shared_ca().certificate).problems)


@pytest.fixture
def written(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with _log(path) as log:
        for n in range(6):
            log.record({"event": "issued", "workload": WORKLOAD, "n": n})
    return path


def test_a_changed_line_breaks_the_chain_at_the_next(written: Path) -> None:
    def change(lines: list[bytes]) -> list[bytes]:
        lines[1] = lines[1].replace(b'"n":1', b'"n":9')
        return lines

    assert _tampered(written, change)[0].startswith("line 3: the chain is broken")


def test_a_removed_or_moved_line_breaks_the_chain(written: Path) -> None:
    assert _tampered(written, lambda lines: lines[:2] + lines[3:])[0].startswith("line 3:")
    swapped = _tampered(written, lambda lines: [lines[1], lines[0], *lines[2:]])
    assert swapped[0].startswith("line 1: the chain is broken")


def test_a_rewritten_chain_does_not_match_its_signed_checkpoint(written: Path) -> None:
    import hashlib

    def rewrite(lines: list[bytes]) -> list[bytes]:
        records = [json.loads(line) for line in lines]
        records[0]["workload"] = "donjon:workload:sha256:" + "00" * 32  # a forger's edit
        out: list[bytes] = []
        prev = GENESIS
        for record in records:
            record["prev"] = prev  # the forger recomputes the chain, but cannot sign
            line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            out.append(line)
            prev = hashlib.sha256(line).hexdigest()
        return out

    problems = _tampered(written, rewrite)
    assert problems[0] == "line 4: the checkpoint signs another chain than the lines before it"


def test_a_checkpoint_by_another_ca_does_not_verify(written: Path) -> None:
    other = CertificateAuthority.create(
        now=datetime(2024, 1, 1, tzinfo=UTC), lifetime=timedelta(days=4000)
    )
    report = verify_log(written.read_bytes(), other.certificate)
    assert not report.intact
    assert "the checkpoint's signature does not verify with this CA" in report.problems[0]


def test_garbage_is_reported_not_raised(tmp_path: Path) -> None:
    report = verify_log(b'{"seq":0}\nnot json\n', shared_ca().certificate)
    assert report.problems[0].startswith("line 1: the chain is broken")
    assert verify_log(b"\xff\xfe\n", shared_ca().certificate).problems == ("line 1: not JSON",)
    assert verify_log(b"", shared_ca().certificate).intact  # an empty log is intact


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    # Two workers of one Steward: two AuditLog objects, two file descriptors, one file.
    path = tmp_path / "audit.jsonl"
    logs = [_log(path, every=25), _log(path, every=25)]

    def write(log: AuditLog, who: int) -> None:
        for n in range(100):
            log.record({"event": "issued", "worker": who, "n": n})

    threads = [threading.Thread(target=write, args=(log, i)) for i, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    lines = _lines(path)
    assert [line["seq"] for line in lines] == list(range(len(lines)))
    report = verify_log(path.read_bytes(), shared_ca().certificate)
    assert report.intact, report.problems
    assert report.records == 200 and report.unsigned_tail == 0


def test_an_unwritable_log_is_a_clear_config_error(tmp_path: Path) -> None:
    from donjon.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"cannot open the audit log .*: No such file or directory; give a writable file",
    ):
        AuditLog(tmp_path / "missing-dir" / "audit.jsonl", shared_ca().sign_result)


# -- what Steward records --------------------------------------------------------------------


def _core(tmp_path: Path, log: AuditLog) -> tuple[StewardCore, SecretStore, bytes]:
    store = SecretStore(tmp_path / "state")
    value = b"pw-" + secrets.token_hex(8).encode()
    store.set("db-password", value)
    policy = StewardPolicy.parse(
        DEV_POLICY_TOML + f'\n[steward.secrets]\ndb-password = ["{WORKLOAD}"]\n',
        source="p.toml",
    )
    return (
        StewardCore(shared_ca(), policy, clock=PinnedClock(), secrets=store, audit=log),
        store,
        value,
    )


def test_steward_records_each_decision_and_never_a_value(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _log(path, every=100)
    core, _, value = _core(tmp_path, log)
    keep = Keep(tmp_path)
    issued = core.attest(keep.request(core.nonce().nonce))
    used = core.nonce().nonce
    core.attest(keep.request(used))
    with pytest.raises(FreshnessError):
        core.attest(keep.request(used))  # replayed
    named = keep.request(core.nonce().nonce, csr=keep.csr(uris=[WORKLOAD]))
    core.release(SecretsRequest(attest=named, names=("db-password",)))
    other = keep.request(
        core.nonce().nonce, csr=keep.csr(uris=["donjon:workload:sha256:" + "cd" * 32])
    )
    with pytest.raises(PolicyError):
        core.release(SecretsRequest(attest=other, names=("db-password",)))
    log.close()
    records = _lines(path)
    assert [r["event"] for r in records] == [
        "issued", "issued", "refused", "released", "withheld", "checkpoint",
    ]  # fmt: skip
    first = records[0]
    assert first["endpoint"] == "/v1/attest" and first["platform"] == "nil"
    assert first["serial"] == f"{issued.certificate.serial_number:x}"
    assert first["key"] == issued.claims.key_sha256.hex()
    assert first["policy"] == "dev" and first["insecure"] is True
    assert records[2]["error"] == "FreshnessError"
    assert records[3]["secrets"] == ["db-password"] and records[3]["workload"] == WORKLOAD
    withheld = records[4]
    assert str(withheld["reason"]).startswith("no release rule names this workload: secret")
    assert value not in path.read_bytes()
    assert verify_log(path.read_bytes(), shared_ca().certificate).intact


# -- the command ----------------------------------------------------------------------------------


def test_audit_verify_exit_codes(written: Path, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(shared_ca().certificate_pem)
    runner = CliRunner()
    ok = runner.invoke(cli, ["steward", "audit", "verify", str(written), "--ca", str(ca)])
    assert ok.exit_code == 0, ok.output
    assert "6 records (6 issued), 2 signed checkpoints, 0 records after the last checkpoint" in (
        ok.output
    )
    assert ok.output.rstrip().endswith("intact")
    lines = written.read_bytes().splitlines()
    lines[0] = lines[0].replace(b'"n":0', b'"n":7')
    written.write_bytes(b"\n".join(lines) + b"\n")
    bad = runner.invoke(
        cli, ["steward", "audit", "verify", str(written), "--ca", str(ca), "--json"]
    )
    assert bad.exit_code == 1
    assert json.loads(bad.output)["problems"][0].startswith("line 2: the chain is broken")
    missing = runner.invoke(
        cli, ["steward", "audit", "verify", str(tmp_path / "no"), "--ca", str(ca)]
    )
    assert missing.exit_code == 2 and "cannot read" in missing.output

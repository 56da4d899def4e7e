"""Steward releases secrets: ``StewardCore.release`` with a real CA, real nil evidence from a
development key, a pinned clock and a real secret store; the ``[steward.secrets]`` rules of the
policy; and ``POST /v1/secrets`` through a real server and ``StewardClient.secrets``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from donjon.crypto.ca import CertificateAuthority, KeyPair, verify_issued, verify_signed_result
from donjon.crypto.sealing import SealError, open_secret
from donjon.errors import (
    ConfigError,
    DecodeError,
    FreshnessError,
    MeasurementError,
    PolicyError,
    RemoteProtocolError,
    SignatureError,
    VerificationError,
)
from donjon.steward.client import StewardClient, check_issued, claims_of
from donjon.steward.config import DEV_POLICY_TOML, StewardPolicy
from donjon.steward.core import StewardCore, status_for
from donjon.steward.messages import (
    CONTENT_TYPE,
    MAX_REQUEST_BYTES,
    AttestRequest,
    AttestResponse,
    ErrorBody,
    NonceResponse,
    ResultClaims,
    SecretsRequest,
    SecretsResponse,
)
from donjon.steward.secrets import SecretStore
from donjon.wire.cbor import decode, encode
from tests.unit.steward._support import Keep, PinnedClock, running, shared_ca

WORKLOAD = "donjon:workload:sha256:" + "ab" * 32
OTHER = "donjon:workload:sha256:" + "cd" * 32
# Random-looking and distinctive, so that finding them anywhere can only mean a leak.
DB_VALUE = b"pw-7f3a9c1e5b2d4086-db"
API_VALUE = b"tok-0e8d6b4a2c1f3957-api"
DEV_LINES = DEV_POLICY_TOML.count("\n")  # the line [steward.secrets] goes on is DEV_LINES + 1


def _policy(rules: str) -> StewardPolicy:
    return StewardPolicy.parse(DEV_POLICY_TOML + "[steward.secrets]\n" + rules, source="p.toml")


# db-password goes to WORKLOAD; api-token only to OTHER.
RULES = f'db-password = ["{WORKLOAD}"]\napi-token = ["{OTHER}"]\n'


@pytest.fixture
def clock() -> PinnedClock:
    return PinnedClock()


@pytest.fixture
def keep(tmp_path: Path) -> Keep:
    return Keep(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> SecretStore:
    store = SecretStore(tmp_path / "steward")
    store.set("db-password", DB_VALUE)
    store.set("api-token", API_VALUE)
    return store


@pytest.fixture
def core(clock: PinnedClock, store: SecretStore) -> StewardCore:
    return StewardCore(shared_ca(), _policy(RULES), clock=clock, secrets=store)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="donjon")
    return caplog


def _ask(
    core: StewardCore, keep: Keep, *names: str, workload: str | None = WORKLOAD
) -> SecretsRequest:
    """A request for *names* with fresh nil evidence binding the Keep's key and a new nonce."""
    nonce = core.nonce().nonce
    csr = keep.csr(uris=[workload]) if workload is not None else keep.csr()
    return SecretsRequest(attest=keep.request(nonce, csr=csr), names=names)


def _open(response: SecretsResponse, request: SecretsRequest, keep: Keep) -> dict[str, bytes]:
    pem = keep.key.private_key_pem()
    nonce = request.attest.nonce
    return {n: open_secret(v, pem, name=n, nonce=nonce) for n, v in response.sealed.items()}


def _refusal(core: StewardCore, request: SecretsRequest) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        core.release(request)
    assert status_for(info.value) == 403
    return info.value


# -- released --------------------------------------------------------------------------------------


def test_a_released_secret_opens_with_the_csr_key_to_the_stored_value(
    core: StewardCore, keep: Keep
) -> None:
    request = _ask(core, keep, "db-password")
    response = core.release(request)
    assert list(response.sealed) == ["db-password"]
    assert _open(response, request, keep) == {"db-password": DB_VALUE}
    # Sealed to that key and request only: not in the clear on the wire, not for another key.
    assert DB_VALUE not in response.encode()
    with pytest.raises(SealError):
        open_secret(
            response.sealed["db-password"],
            KeyPair.generate("P-384").private_key_pem(),
            name="db-password",
            nonce=request.attest.nonce,
        )


def test_several_secrets_come_back_in_the_order_asked(
    clock: PinnedClock, store: SecretStore, keep: Keep
) -> None:
    both = f'db-password = ["{WORKLOAD}"]\napi-token = ["{OTHER}", "{WORKLOAD}"]\n'
    core = StewardCore(shared_ca(), _policy(both), clock=clock, secrets=store)
    request = _ask(core, keep, "api-token", "db-password")
    response = core.release(request)
    assert list(response.sealed) == ["api-token", "db-password"]
    assert _open(response, request, keep) == {"api-token": API_VALUE, "db-password": DB_VALUE}


def test_the_result_and_the_chain_name_the_csr_workload(core: StewardCore, keep: Keep) -> None:
    request = _ask(core, keep, "db-password")
    response = core.release(request)
    ca = shared_ca()
    assert len(response.chain) == 2 and response.chain[1] == ca.certificate_der
    leaf = x509.load_der_x509_certificate(response.chain[0])
    verify_issued(leaf, ca.certificate)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [WORKLOAD]
    claims = ResultClaims.decode(verify_signed_result(response.result, ca.certificate))
    assert claims == claims_of(leaf)
    assert claims.workload == WORKLOAD
    assert claims.nonce == request.attest.nonce
    assert claims.policy == "dev" and claims.policy_digest == core.policy.digest
    # The same checks a Keep makes on an /v1/attest answer pass on this one.
    issued = check_issued(
        AttestResponse(chain=response.chain, result=response.result),
        spki_der=keep.key.spki_der,
        nonce=request.attest.nonce,
        ca=ca.certificate,
    )
    assert issued.claims == claims


def test_a_release_is_logged_without_the_value(
    core: StewardCore, keep: Keep, logs: pytest.LogCaptureFixture
) -> None:
    core.release(_ask(core, keep, "db-password"))
    assert f"released 1 secret(s) db-password to workload {WORKLOAD}" in logs.text
    assert "policy dev" in logs.text
    assert DB_VALUE.decode() not in logs.text
    assert DB_VALUE.hex() not in logs.text


# -- refused ---------------------------------------------------------------------------------------


def _missing_rule_message(name: str, workload: str = WORKLOAD) -> str:
    return (
        f"secret {name!r} is not released to workload {workload} by policy 'dev': its owner "
        f"must store it (`donjon steward secret set {name}`) and name this workload in a release "
        f'rule ([steward.secrets] {name} = ["{workload}"])'
    )


def test_a_workload_no_rule_names_is_refused_with_the_missing_rule(
    core: StewardCore,
    keep: Keep,
    logs: pytest.LogCaptureFixture,
    clock: PinnedClock,
    store: SecretStore,
) -> None:
    error = _refusal(core, _ask(core, keep, "api-token"))
    assert str(error) == _missing_rule_message("api-token")
    assert API_VALUE.decode() not in str(error)
    assert "no release rule names this workload" in logs.text
    assert "released" not in logs.text.replace("not released", "")
    # The rule the message gives, written into the policy, is the one that was missing.
    rule = str(error).split("[steward.secrets] ", 1)[1].rstrip(")")
    fixed = StewardCore(shared_ca(), _policy(rule + "\n"), clock=clock, secrets=store)
    request = _ask(fixed, keep, "api-token")
    assert _open(fixed.release(request), request, keep) == {"api-token": API_VALUE}


def test_a_secret_no_rule_mentions_is_refused_the_same_way(
    core: StewardCore, keep: Keep, logs: pytest.LogCaptureFixture
) -> None:
    error = _refusal(core, _ask(core, keep, "unknown"))
    assert str(error) == _missing_rule_message("unknown")
    assert "refused secret unknown to workload" in logs.text


def test_an_unstored_secret_is_refused_like_an_unnamed_workload_and_only_the_log_tells(
    clock: PinnedClock, tmp_path: Path, keep: Keep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="donjon")
    stored = SecretStore(tmp_path / "full")
    stored.set("db-password", DB_VALUE)
    # (a) the rule names the workload but the store lacks the secret;
    # (b) the store holds it but no rule names the workload.
    unstored = StewardCore(
        shared_ca(),
        _policy(f'db-password = ["{WORKLOAD}"]\n'),
        clock=clock,
        secrets=SecretStore(tmp_path / "empty"),
    )
    unnamed = StewardCore(
        shared_ca(), _policy(f'db-password = ["{OTHER}"]\n'), clock=clock, secrets=stored
    )
    assert unstored.policy.name == unnamed.policy.name  # the message names the policy

    error_a = _refusal(unstored, _ask(unstored, keep, "db-password"))
    log_a = caplog.text
    caplog.clear()
    error_b = _refusal(unnamed, _ask(unnamed, keep, "db-password"))
    log_b = caplog.text

    assert str(error_a) == str(error_b) == _missing_rule_message("db-password")  # no oracle
    assert type(error_a) is type(error_b)
    assert "refused secret db-password to workload " + WORKLOAD in log_a
    assert log_a.rstrip().endswith("it is not stored")
    assert log_b.rstrip().endswith("no release rule names this workload")
    assert DB_VALUE.decode() not in log_a + log_b + str(error_b)


def test_a_csr_without_a_workload_uri_is_refused(
    core: StewardCore, keep: Keep, logs: pytest.LogCaptureFixture
) -> None:
    request = _ask(core, keep, "db-password", workload=None)
    # Its identity would be derived from the measurement, which no rule may name.
    measurement = keep.provider.measurement.hex()
    assert (
        core.attest(keep.request(core.nonce().nonce)).claims.workload
        == f"donjon:measurement:nil:{measurement}"
    )
    error = _refusal(core, request)
    assert "must name its workload" in str(error)
    assert "donjon:workload:sha256:<hex>" in str(error)
    assert "released" not in logs.text


def test_all_or_nothing(core: StewardCore, keep: Keep, logs: pytest.LogCaptureFixture) -> None:
    # db-password would be released, api-token is not: nothing is.
    for names in (("db-password", "api-token"), ("api-token", "db-password")):
        request = _ask(core, keep, *names)
        error = _refusal(core, request)
        assert str(error) == _missing_rule_message("api-token")
    assert "released" not in logs.text.replace("not released", "")
    assert DB_VALUE.decode() not in logs.text
    # A refused request has used up its nonce: asking again means attesting again.
    with pytest.raises(FreshnessError):
        core.release(request)


def test_no_secret_store_refuses_every_secret(
    clock: PinnedClock, keep: Keep, logs: pytest.LogCaptureFixture
) -> None:
    core = StewardCore(shared_ca(), _policy(RULES), clock=clock)
    error = _refusal(core, _ask(core, keep, "db-password"))
    assert str(error) == _missing_rule_message("db-password")
    assert "this Steward has no secret store" in logs.text


def test_a_replayed_request_is_refused(core: StewardCore, keep: Keep) -> None:
    request = _ask(core, keep, "db-password")
    core.release(request)
    with pytest.raises(FreshnessError):
        core.release(request)
    # A nonce spent on /v1/attest does not buy secrets either.
    nonce = core.nonce().nonce
    attest = keep.request(nonce, csr=keep.csr(uris=[WORKLOAD]))
    core.attest(attest)
    with pytest.raises(FreshnessError):
        core.release(SecretsRequest(attest=attest, names=("db-password",)))


def test_an_expired_nonce_is_refused(core: StewardCore, keep: Keep, clock: PinnedClock) -> None:
    request = _ask(core, keep, "db-password")
    clock.advance(hours=1)
    with pytest.raises(FreshnessError):
        core.release(request)


def test_evidence_binding_another_key_is_refused(core: StewardCore, keep: Keep) -> None:
    nonce = core.nonce().nonce
    thief = KeyPair.generate("P-384")
    request = SecretsRequest(
        attest=AttestRequest(
            csr=thief.csr(uris=[WORKLOAD]),  # the thief's key in the CSR ...
            platform="nil",
            evidence=keep.evidence(nonce),  # ... and evidence that binds the Keep's
            nonce=nonce,
        ),
        names=("db-password",),
    )
    with pytest.raises(VerificationError) as info:
        core.release(request)
    assert isinstance(info.value, MeasurementError)
    assert "does not bind the CSR's public key" in str(info.value)


def test_evidence_for_another_nonce_is_refused(core: StewardCore, keep: Keep) -> None:
    nonce, other = core.nonce().nonce, core.nonce().nonce
    attest = AttestRequest(
        csr=keep.csr(uris=[WORKLOAD]), platform="nil", evidence=keep.evidence(other), nonce=nonce
    )
    with pytest.raises(MeasurementError):
        core.release(SecretsRequest(attest=attest, names=("db-password",)))


def test_a_bad_csr_uri_is_a_decode_error(core: StewardCore, keep: Keep) -> None:
    nonce = core.nonce().nonce
    attest = keep.request(nonce, csr=keep.csr(uris=[WORKLOAD, OTHER]))
    with pytest.raises(DecodeError, match="more than one workload identity"):
        core.release(SecretsRequest(attest=attest, names=("db-password",)))


def test_the_stored_values_never_reach_the_log(
    core: StewardCore, keep: Keep, logs: pytest.LogCaptureFixture
) -> None:
    core.release(_ask(core, keep, "db-password"))
    for names in (("api-token",), ("db-password", "api-token"), ("nope",)):
        with pytest.raises(PolicyError):
            core.release(_ask(core, keep, *names))
    with pytest.raises(PolicyError):
        core.release(_ask(core, keep, "db-password", workload=None))
    text = logs.text
    assert "released 1 secret(s)" in text and "refused secret" in text
    for value in (DB_VALUE, API_VALUE):
        assert value.decode() not in text
        assert value.hex() not in text


# -- [steward.secrets] in the policy ---------------------------------------------------------------


def test_rules_with_multi_line_arrays_and_comments() -> None:
    text = (
        DEV_POLICY_TOML
        + f'[steward]\nworkloads = ["{WORKLOAD}", "{OTHER}"]\n\n'
        + "[steward.secrets]   # who gets what\n"
        + f'db-password = [\n  "{WORKLOAD}",  # the API server\n  "{OTHER}",\n]\n'
        + f'api_token-2 = [ "{OTHER}" ]\n'
        + '\n[sev-snp]\nmeasurements = [\n  "'
        + "00" * 48
        + '",\n]\n'
    )
    policy = StewardPolicy.parse(text, source="p.toml")
    assert policy.secrets == (
        ("api_token-2", frozenset({OTHER})),
        ("db-password", frozenset({WORKLOAD, OTHER})),
    )
    assert policy.secret_readers("db-password") == frozenset({WORKLOAD, OTHER})
    assert policy.secret_readers("api_token-2") == frozenset({OTHER})
    assert policy.secret_readers("unknown") == frozenset()
    assert policy.workloads == frozenset({WORKLOAD, OTHER})
    assert policy.steward_dict()["secrets"] == {
        "api_token-2": [OTHER],
        "db-password": sorted([WORKLOAD, OTHER]),
    }


def test_an_inline_secrets_table_is_the_same_policy() -> None:
    inline = StewardPolicy.parse(
        DEV_POLICY_TOML + f'[steward]\nsecrets = {{ db-password = ["{WORKLOAD}"] }}\n',
        source="p.toml",
    )
    table = _policy(f'db-password = ["{WORKLOAD}"]\n')
    assert inline.secrets == table.secrets
    assert inline.digest == table.digest


def test_no_rules_release_nothing() -> None:
    policy = StewardPolicy.dev()
    assert policy.secrets == ()
    assert policy.secret_readers("db-password") == frozenset()


KEY_LINE = DEV_LINES + 2  # the first key of [steward.secrets]


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            "[steward]\nsecrets = 3\n",
            rf"^p\.toml:{DEV_LINES + 2}: steward\.secrets: must be a table of secret names; "
            r"write \[steward\.secrets\]",
        ),
        (
            '[steward]\nsecrets = ["db-password"]\n',
            rf"^p\.toml:{DEV_LINES + 2}: steward\.secrets: must be a table of secret names",
        ),
        (
            f'[steward.secrets]\nDB = ["{WORKLOAD}"]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.\"DB\": is not a secret name; use 1-64 of "
            r"a-z, 0-9, '_' and '-', starting with a letter or digit$",
        ),
        (
            f'[steward.secrets]\n-db = ["{WORKLOAD}"]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.\"-db\": is not a secret name",
        ),
        (
            f'[steward.secrets]\n{"a" * 65} = ["{WORKLOAD}"]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.\"a{{65}}\": is not a secret name",
        ),
        (
            f'[steward.secrets]\n"a.b" = ["{WORKLOAD}"]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.\"a\.b\": is not a secret name",
        ),
        (
            f'[steward.secrets]\n"" = ["{WORKLOAD}"]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.\"\": is not a secret name",
        ),
        (
            "[steward.secrets]\ndb-password = []\n",
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.db-password: names no workload, so the "
            r"secret would go to none; list the workloads \(`donjon workload id`",
        ),
        (
            f'[steward.secrets]\ndb-password = ["{WORKLOAD}",\n  "donjon:measurement:nil:'
            + "00" * 48
            + '"]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.db-password: "
            r"'donjon:measurement:nil:0+' is not a workload identity; write "
            r"donjon:workload:sha256:<64 hex> .*a secret never goes to a Keep that does not "
            r"name its workload$",
        ),
        (
            '[steward.secrets]\ndb-password = ["donjon:workload:sha256:AB"]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.db-password: .* is not a workload identity",
        ),
        (
            "[steward.secrets]\ndb-password = [1]\n",
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.db-password: must be a list of workload "
            r"identity URIs$",
        ),
        (
            f'[steward.secrets]\ndb-password = ["{WORKLOAD}", true]\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.db-password: must be a list",
        ),
        (
            f'[steward.secrets]\ndb-password = "{WORKLOAD}"\n',
            rf"^p\.toml:{KEY_LINE}: steward\.secrets\.db-password: must be a list",
        ),
        (
            "[steward.secrets.db-password]\nreaders = []\n",
            rf"^p\.toml:{DEV_LINES + 1}: steward\.secrets\.db-password: must be a list",
        ),
    ],
    ids=[
        "not-a-table",
        "an-array",
        "uppercase",
        "leading-dash",
        "65-chars",
        "dotted-quoted",
        "empty-name",
        "empty-list",
        "measurement-uri",
        "uppercase-uri",
        "integer-entry",
        "bool-entry",
        "a-string",
        "a-sub-table",
    ],
)
def test_bad_rules_name_file_line_and_field(rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StewardPolicy.parse(DEV_POLICY_TOML + rules, source="p.toml")


@pytest.mark.parametrize("name", ["db\\n", "a\\nb", "db-password\\n"])
def test_a_quoted_name_with_a_newline_is_refused_with_file_and_line(name: str) -> None:
    # SECRET_NAME is matched in full: "db-password\n" is not "db-password".
    located = rf"^p\.toml:({DEV_LINES + 1}|{KEY_LINE}): steward\.secrets\."
    with pytest.raises(ConfigError, match=located) as info:
        _policy(f'"{name}" = ["{WORKLOAD}"]\n')
    assert "is not a secret name" in str(info.value)


def test_a_quoted_name_with_a_newline_is_shown_escaped_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        _policy(f'"db\\nx" = ["{WORKLOAD}"]\n')
    assert "\n" not in str(info.value)
    assert "db\\nx" in str(info.value)


def test_a_bad_quoted_name_points_at_its_own_line() -> None:
    with pytest.raises(ConfigError, match=rf"^p\.toml:{KEY_LINE}: "):
        _policy(f'"DB" = ["{WORKLOAD}"]\n')


def test_the_digest_covers_the_rules() -> None:
    base = _policy(f'db-password = ["{WORKLOAD}"]\n')
    same = StewardPolicy.parse(
        DEV_POLICY_TOML + f'[steward.secrets]\ndb-password = [\n  "{WORKLOAD}",\n]\n',
        source="elsewhere.toml",
    )
    assert same.digest == base.digest  # layout and file name are not rules
    variants = [
        StewardPolicy.dev(),  # no rules
        _policy(f'db-password = ["{OTHER}"]\n'),  # another reader
        _policy(f'db-password = ["{WORKLOAD}", "{OTHER}"]\n'),  # one more reader
        _policy(f'db-passwords = ["{WORKLOAD}"]\n'),  # another secret
        _policy(f'db-password = ["{WORKLOAD}"]\napi-token = ["{WORKLOAD}"]\n'),  # one more rule
    ]
    digests = {base.digest, *(v.digest for v in variants)}
    assert len(digests) == len(variants) + 1
    # Readers and rules in another order are the same rules.
    swapped = _policy(f'api-token = ["{WORKLOAD}"]\ndb-password = ["{OTHER}", "{WORKLOAD}"]\n')
    again = _policy(f'db-password = ["{WORKLOAD}", "{OTHER}"]\napi-token = ["{WORKLOAD}"]\n')
    assert swapped.digest == again.digest


def test_the_result_names_the_digest_of_the_rules_applied(
    clock: PinnedClock, store: SecretStore, keep: Keep
) -> None:
    for rules in (f'db-password = ["{WORKLOAD}"]\n', f'db-password = ["{WORKLOAD}", "{OTHER}"]\n'):
        policy = _policy(rules)
        core = StewardCore(shared_ca(), policy, clock=clock, secrets=store)
        response = core.release(_ask(core, keep, "db-password"))
        claims = ResultClaims.decode(verify_signed_result(response.result, shared_ca().certificate))
        assert claims.policy_digest == policy.digest


# -- POST /v1/secrets through a real server, and StewardClient.secrets -----------------------------

CBOR = {"content-type": CONTENT_TYPE}


@pytest.fixture
def url(core: StewardCore) -> Iterator[str]:
    with running(core) as url:
        yield url


def _http_request(url: str, keep: Keep, *names: str) -> SecretsRequest:
    nonce = NonceResponse.decode(httpx.get(f"{url}/v1/nonce").content).nonce
    return SecretsRequest(
        attest=keep.request(nonce, csr=keep.csr(uris=[WORKLOAD])), names=tuple(names)
    )


def _error(response: httpx.Response) -> ErrorBody:
    assert response.headers["content-type"] == CONTENT_TYPE
    return ErrorBody.decode(response.content)


@pytest.mark.integration
def test_http_released(url: str, keep: Keep) -> None:
    request = _http_request(url, keep, "db-password")
    response = httpx.post(f"{url}/v1/secrets", content=request.encode(), headers=CBOR)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    answer = SecretsResponse.decode(response.content)
    assert _open(answer, request, keep) == {"db-password": DB_VALUE}
    assert DB_VALUE not in response.content


@pytest.mark.integration
def test_http_refused_with_the_reason(url: str, keep: Keep) -> None:
    request = _http_request(url, keep, "db-password", "api-token")
    response = httpx.post(f"{url}/v1/secrets", content=request.encode(), headers=CBOR)
    assert response.status_code == 403
    body = _error(response)
    assert body == ErrorBody(error="PolicyError", reason=_missing_rule_message("api-token"))
    assert DB_VALUE not in response.content and API_VALUE not in response.content


@pytest.mark.integration
def test_http_wrong_content_type(url: str, keep: Keep) -> None:
    request = _http_request(url, keep, "db-password")
    response = httpx.post(
        f"{url}/v1/secrets", content=request.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 415
    body = _error(response)
    assert body.error == "UnsupportedMediaType"
    assert "'application/json'" in body.reason and CONTENT_TYPE in body.reason


@pytest.mark.integration
def test_http_oversize(url: str) -> None:
    response = httpx.post(
        f"{url}/v1/secrets", content=b"\xa0" * (MAX_REQUEST_BYTES + 1), headers=CBOR
    )
    assert response.status_code == 413
    assert _error(response).reason.startswith(f"request body is over {MAX_REQUEST_BYTES} bytes")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xa0", "secrets request: missing field 'v' (protocol version)"),
        (b"\xa1\x61", "secrets request is not valid CBOR"),
        (b"\xa0\x00", "secrets request has 1 trailing bytes"),
        (
            encode(
                {"v": 1, "csr": b"0", "platform": "nil", "evidence": b"", "nonce": b"", "names": []}
            ),
            "secrets request: field 'names' is empty; name the secrets to release",
        ),
    ],
    ids=["empty-map", "truncated", "trailing", "no-names"],
)
def test_http_malformed(url: str, body: bytes, reason: str) -> None:
    response = httpx.post(f"{url}/v1/secrets", content=body, headers=CBOR)
    assert response.status_code == 400
    error = _error(response)
    assert error.error == "DecodeError"
    assert error.reason.startswith(reason)


@pytest.mark.integration
def test_client_returns_the_opened_values(url: str, keep: Keep) -> None:
    with StewardClient(url, ca=shared_ca().certificate) as client:
        values = client.secrets(
            keep.key, WORKLOAD, ["db-password"], evidence=keep.provider.evidence, platform="nil"
        )
    assert values == {"db-password": DB_VALUE}


@pytest.mark.integration
def test_client_raises_the_refusal(url: str, keep: Keep) -> None:
    with (
        StewardClient(url, ca=shared_ca().certificate) as client,
        pytest.raises(PolicyError) as info,
    ):
        client.secrets(
            keep.key, WORKLOAD, ["api-token"], evidence=keep.provider.evidence, platform="nil"
        )
    assert str(info.value) == "Steward: " + _missing_rule_message("api-token")


@pytest.mark.integration
def test_client_refuses_a_steward_with_another_ca(url: str, keep: Keep) -> None:
    # The answer is checked like an /v1/attest answer: another CA is a SignatureError (as the
    # docstring of StewardClient.secrets lists), and no value is returned.
    other = CertificateAuthority.create(
        now=datetime(2024, 1, 1, tzinfo=UTC), lifetime=timedelta(days=5 * 365)
    )
    with (
        StewardClient(url, ca=other.certificate) as client,
        pytest.raises(SignatureError, match="other than the pinned one"),
    ):
        client.secrets(
            keep.key, WORKLOAD, ["db-password"], evidence=keep.provider.evidence, platform="nil"
        )


class _Tamper(httpx.BaseTransport):
    """Real HTTP to the real server; rewrites the body of ``/v1/secrets`` answers."""

    def __init__(self, change: dict[str, object]) -> None:
        self._real = httpx.HTTPTransport()
        self._change = change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._real.handle_request(request)
        if request.url.path != "/v1/secrets":
            return response
        response.read()
        body = decode(response.content)
        body["secrets"] = self._change
        return httpx.Response(200, headers=response.headers, content=encode(body))

    def close(self) -> None:
        self._real.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, "other secrets than the ones asked for"),
        ({"db-password": b"\x00" * 200}, "does not open with this Keep's key"),
        ({"db-password": b"\x00" * 200, "api-token": b""}, "other secrets than the ones asked"),
    ],
    ids=["dropped", "altered", "extra"],
)
def test_client_refuses_an_answer_that_does_not_check_out(
    url: str, keep: Keep, change: dict[str, object], message: str
) -> None:
    client = StewardClient(url, ca=shared_ca().certificate, transport=_Tamper(change))
    with client, pytest.raises(RemoteProtocolError, match=message):
        client.secrets(
            keep.key, WORKLOAD, ["db-password"], evidence=keep.provider.evidence, platform="nil"
        )

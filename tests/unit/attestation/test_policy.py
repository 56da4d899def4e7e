"""Attestation policy: parsing, built-ins, every check, and how rejections read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from donjon.attestation import policy as policy_mod
from donjon.attestation.policy import (
    ANY,
    BUILTIN_POLICIES,
    KNOWN_TCB_STATUSES,
    Policy,
    Rules,
    enforce,
    evaluate,
)
from donjon.attestation.result import Platform, VerifiedEvidence
from donjon.crypto.binding import report_data_for
from donjon.errors import ConfigError, PolicyError, UsageError

SNP_MEASUREMENT = bytes.fromhex("a1" * 48)
SGX_MEASUREMENT = bytes.fromhex("33" * 32)
REPORT_DATA = bytes(range(64))


def evidence(
    platform: Platform = Platform.SEV_SNP,
    *,
    measurement: bytes = SNP_MEASUREMENT,
    report_data: bytes = REPORT_DATA,
    debug: bool = False,
    tcb_status: str | None = None,
    advisory_ids: tuple[str, ...] = (),
    **claims: Any,
) -> VerifiedEvidence:
    return VerifiedEvidence(
        platform=platform,
        measurement=measurement,
        report_data=report_data,
        debug=debug,
        tcb_status=tcb_status,
        advisory_ids=advisory_ids,
        claims=claims,
    )


def tdx(**kw: Any) -> VerifiedEvidence:
    kw.setdefault("td_attributes", "0000001000000000")  # SEPT_VE_DISABLE set
    kw.setdefault("tcb_status", "UpToDate")
    return evidence(Platform.TDX, **kw)


def nil(**kw: Any) -> VerifiedEvidence:
    return evidence(Platform.NIL, debug=True, insecure=True, **kw)


# --- built-ins --------------------------------------------------------------------------------


def test_builtins_are_named_and_distinct() -> None:
    prod, perm = Policy.production(), Policy.permissive()
    assert (prod.name, perm.name) == ("production", "permissive")
    assert BUILTIN_POLICIES == ("production", "permissive")
    assert prod.digest() != perm.digest()
    assert Policy.named("production") is prod
    assert Policy.named("permissive") is perm
    assert not prod.allow_insecure and not perm.allow_insecure


def test_production_rules() -> None:
    rules = Policy.production().rules
    assert rules.reject_debug is True
    assert rules.tcb_statuses == frozenset({"UpToDate", "SWHardeningNeeded"})
    assert rules.require_sept_ve_disable is True
    assert Platform.NIL not in Policy.production().accepted_platforms()


def test_permissive_is_authenticity_only_but_not_nil() -> None:
    perm = Policy.permissive()
    weak = evidence(Platform.SGX, measurement=SGX_MEASUREMENT, debug=True, tcb_status="Revoked")
    assert evaluate(perm, weak).accepted
    assert evaluate(perm, tdx(td_attributes="0000000000000000")).accepted
    assert not evaluate(perm, nil()).accepted


def test_builtin_files_round_trip_and_defaults_equal_production() -> None:
    for name in BUILTIN_POLICIES:
        p = Policy.named(name)
        assert Policy.parse(p.to_toml(), source="t") == p
    # Rule 2: an empty policy file has the production baseline.
    empty = Policy.parse("", source="empty.toml")
    assert empty.name == "empty.toml"
    assert empty.digest() == Policy.production().digest()


def test_digest_names_content_not_name() -> None:
    a = Policy.parse('name = "a"\nreject_debug = false\n', source="a")
    b = Policy.parse('name = "b"\nreject_debug = false\n', source="b")
    c = Policy.parse('name = "a"\n', source="c")
    assert a.digest() == b.digest() != c.digest()
    assert a.digest().startswith("sha256:") and len(a.digest()) == 7 + 64
    assert json.loads(json.dumps(a.to_dict())) == a.to_dict()


# --- rejections explain themselves ------------------------------------------------------------


def test_debug_rejection_reads_as_documented() -> None:
    verdict = evaluate(Policy.production(), evidence(debug=True))
    assert not verdict.accepted
    assert verdict.reason == (
        "rejected: debug enabled (SEV-SNP guest policy bit 19) not allowed by policy 'production'"
    )
    assert [c.name for c in verdict.failed] == ["debug"]


def test_tcb_status_rejection_reads_as_documented() -> None:
    ev = evidence(
        Platform.SGX,
        measurement=SGX_MEASUREMENT,
        tcb_status="OutOfDate",
        advisory_ids=("INTEL-SA-00615",),
    )
    verdict = evaluate(Policy.production(), ev)
    assert verdict.reason == (
        "rejected: TCB status OutOfDate (advisories INTEL-SA-00615) not allowed by policy "
        "'production'"
    )
    no_adv = evaluate(Policy.production(), evidence(Platform.SGX, tcb_status="OutOfDate"))
    assert no_adv.reason == "rejected: TCB status OutOfDate not allowed by policy 'production'"


@pytest.mark.parametrize("status", sorted(KNOWN_TCB_STATUSES))
def test_production_tcb_statuses(status: str) -> None:
    ev = evidence(Platform.SGX, measurement=SGX_MEASUREMENT, tcb_status=status)
    accepted = evaluate(Policy.production(), ev).accepted
    assert accepted == (status in {"UpToDate", "SWHardeningNeeded"})
    assert evaluate(Policy.permissive(), ev).accepted


def test_platform_without_tcb_status_passes_the_status_check() -> None:
    verdict = evaluate(Policy.production(), evidence(tcb_status=None))
    assert verdict.accepted
    assert verdict.reason is None
    status_check = next(c for c in verdict.checks if c.name == "tcb_status")
    assert status_check.passed and "no TCB status" in status_check.detail


def test_first_failure_is_the_reason_and_every_failure_is_listed() -> None:
    ev = evidence(Platform.SGX, measurement=SGX_MEASUREMENT, debug=True, tcb_status="OutOfDate")
    verdict = evaluate(Policy.production(), ev)
    assert verdict.reason is not None and "debug enabled (SGX ATTRIBUTES.DEBUG)" in verdict.reason
    assert [c.name for c in verdict.failed] == ["debug", "tcb_status"]
    text = verdict.explain()
    assert text.splitlines()[0] == verdict.reason
    assert "✗ tcb_status" in text and "✔ platform" in text


def test_enforce_raises_policy_error_with_the_reason() -> None:
    with pytest.raises(PolicyError) as info:
        enforce(Policy.production(), evidence(debug=True))
    assert info.value.message.startswith("rejected: debug enabled")
    verdict = enforce(Policy.production(), evidence())
    assert verdict.accepted
    assert verdict.reason is None


def test_verdict_json_has_the_contract_keys() -> None:
    verdict = evaluate(Policy.production(), evidence(debug=True, chip_id="ab" * 64))
    out = verdict.to_json()
    assert out["verdict"] == "reject"
    assert out["platform"] == "sev-snp"
    assert out["policy"] == "production"
    assert out["policy_digest"] == Policy.production().digest()
    assert out["reason"] == verdict.reason
    assert out["claims"]["measurement"] == SNP_MEASUREMENT.hex()
    assert out["claims"]["debug"] is True
    assert out["claims"]["chip_id"] == "ab" * 64
    assert {c["name"] for c in out["checks"]} >= {"platform", "debug", "tcb_status"}
    assert json.loads(json.dumps(out)) == out


# --- nil / insecure ---------------------------------------------------------------------------


def test_nil_is_rejected_unless_the_policy_allows_insecure() -> None:
    for p in (Policy.production(), Policy.permissive()):
        verdict = evaluate(p, nil())
        assert verdict.reason == (
            f"rejected: insecure evidence without a TEE (platform nil) not allowed by policy "
            f"'{p.name}'"
        )
    dev = Policy.parse('name = "dev"\nallow_insecure = true\nreject_debug = false\n', source="d")
    assert Platform.NIL in dev.accepted_platforms()
    verdict = evaluate(dev, nil())
    assert verdict.accepted
    assert "INSECURE" in verdict.checks[0].detail


def test_insecure_claim_on_any_platform_needs_allow_insecure() -> None:
    assert not evaluate(Policy.permissive(), evidence(insecure=True)).accepted


def test_allow_insecure_still_rejects_debug_unless_told() -> None:
    dev = Policy.parse("allow_insecure = true\n", source="d")
    assert "debug enabled (nil evidence)" in (evaluate(dev, nil()).reason or "")


def test_platform_list_limits_platforms() -> None:
    p = Policy.parse('platforms = ["tdx"]\n', source="p")
    assert evaluate(p, tdx()).accepted
    assert evaluate(p, evidence()).reason == (
        "rejected: platform sev-snp not allowed by policy 'p'"
    )
    with pytest.raises(ConfigError, match="allow_insecure"):
        Policy.parse('platforms = ["nil"]\n', source="p")
    ok = Policy.parse('allow_insecure = true\nplatforms = ["nil"]\n', source="p")
    assert ok.accepted_platforms() == frozenset({Platform.NIL})


# --- report data and nonce --------------------------------------------------------------------


def test_nonce_is_a_prefix_of_report_data() -> None:
    prod = Policy.production()
    assert evaluate(prod, evidence(), nonce=REPORT_DATA[:8]).accepted
    verdict = evaluate(prod, evidence(), nonce=b"\xff" * 8)
    assert verdict.reason is not None
    assert verdict.reason.startswith("rejected: report data 000102")
    assert "does not begin with the nonce ffffffffffffffff" in verdict.reason
    too_long = evaluate(prod, evidence(), nonce=b"\x00" * 65)
    assert "cannot hold the nonce (65 bytes)" in (too_long.reason or "")


def test_expected_report_data_is_exact_and_matches_the_donjon_binding() -> None:
    spki, nonce = b"\x30\x59" + b"k" * 89, b"n" * 32
    bound = report_data_for(spki, nonce)
    prod = Policy.production()
    assert evaluate(prod, evidence(report_data=bound), expected_report_data=bound).accepted
    other = report_data_for(spki, b"m" * 32)
    verdict = evaluate(prod, evidence(report_data=bound), expected_report_data=other)
    assert verdict.failed[0].name == "report_data"
    assert "is not the expected" in (verdict.reason or "")
    # A prefix is not enough for the exact check.
    assert not evaluate(prod, evidence(report_data=bound), expected_report_data=bound[:32]).accepted


def test_empty_expectations_are_caller_bugs() -> None:
    with pytest.raises(UsageError):
        evaluate(Policy.production(), evidence(), nonce=b"")
    with pytest.raises(UsageError):
        evaluate(Policy.production(), evidence(), expected_report_data=b"")


def test_binding_checks_come_before_quality_checks() -> None:
    verdict = evaluate(Policy.production(), evidence(debug=True), nonce=b"\xff")
    assert verdict.failed[0].name == "nonce"


# --- reference values -------------------------------------------------------------------------


def test_measurements_top_level_and_per_platform() -> None:
    text = f"""
measurements = ["{SNP_MEASUREMENT.hex().upper()}"]

[sgx]
measurements = ["{SGX_MEASUREMENT.hex()}"]

[tdx]
measurements = "any"
"""
    p = Policy.parse(text, source="m.toml")
    assert evaluate(p, evidence()).accepted
    other = evaluate(p, evidence(measurement=b"\x00" * 48))
    assert other.reason == (
        f"rejected: measurement {'00' * 48} not among the 1 accepted by policy 'm.toml'"
    )
    assert evaluate(p, evidence(Platform.SGX, measurement=SGX_MEASUREMENT)).accepted
    assert not evaluate(p, evidence(Platform.SGX, measurement=b"\x01" * 32)).accepted
    assert evaluate(p, tdx(measurement=b"\x07" * 48)).accepted  # "any" lifts the top-level list
    assert p.rules_for(Platform.TDX).measurements is ANY
    assert Policy.parse(p.to_toml(), source="m.toml") == p


def test_measurement_length_is_checked_per_platform() -> None:
    with pytest.raises(ConfigError, match=r"m\.toml:3: sgx\.measurements: .* is 48 bytes"):
        Policy.parse(f'\n[sgx]\nmeasurements = ["{"ab" * 48}"]\n', source="m.toml")
    with pytest.raises(ConfigError, match="is not hex"):
        Policy.parse('measurements = ["xyz"]\n', source="m.toml")


def test_signers_sgx_and_snp() -> None:
    mrsigner = "81" * 32
    p = Policy.parse(
        f'[sgx]\nsigners = ["{mrsigner}"]\n\n[sev-snp]\nsigners = ["{"cd" * 48}"]\n', source="s"
    )
    sgx_ok = evidence(Platform.SGX, measurement=SGX_MEASUREMENT, mrsigner=mrsigner)
    assert evaluate(p, sgx_ok).accepted
    sgx_bad = evidence(Platform.SGX, measurement=SGX_MEASUREMENT, mrsigner="00" * 32)
    assert evaluate(p, sgx_bad).reason == (
        f"rejected: signer (SGX MRSIGNER) {'00' * 32} not among the accepted signers of policy 's'"
    )
    # SNP: the ID key or the author key may be the accepted signer.
    snp = evidence(id_key_digest="00" * 48, author_key_digest="cd" * 48)
    assert evaluate(p, snp).accepted
    missing = evaluate(p, evidence())
    assert "signer (SEV-SNP ID or author key digest) missing" in (missing.reason or "")
    with pytest.raises(ConfigError, match=r"s:2: tdx\.signers: unknown key"):
        Policy.parse('[tdx]\nsigners = ["00"]\n', source="s")


def test_nitro_signer_is_pcr8_by_name_or_in_pcrs() -> None:
    p = Policy.parse(f'[nitro]\nsigners = ["{"88" * 48}"]\n', source="n")
    assert evaluate(p, evidence(Platform.NITRO, pcr8="88" * 48)).accepted
    assert evaluate(p, evidence(Platform.NITRO, pcrs={"8": "88" * 48})).accepted
    assert evaluate(p, evidence(Platform.NITRO, pcrs={8: "88" * 48})).accepted
    assert not evaluate(p, evidence(Platform.NITRO, pcrs={"8": "00" * 48})).accepted


def test_min_tcb_per_component() -> None:
    p = Policy.parse("[sev-snp]\nmin_tcb = { bl = 3, snp = 20, fmc = 1 }\n", source="t")
    low = evidence(reported_tcb_fields={"bl": 3, "tee": 0, "snp": 8, "ucode": 115})
    assert evaluate(p, low).reason == (
        "rejected: SEV-SNP reported TCB snp=8 below the minimum 20 required by policy 't'"
    )
    # Milan has no FMC component: a minimum for it does not apply.
    ok = evidence(reported_tcb_fields={"bl": 4, "tee": 0, "snp": 24, "ucode": 217})
    assert evaluate(p, ok).accepted
    turin = evidence(reported_tcb_fields={"fmc": 0, "bl": 3, "tee": 0, "snp": 20, "ucode": 71})
    assert "fmc=0 below the minimum 1" in (evaluate(p, turin).reason or "")
    assert "without reported_tcb_fields" in (evaluate(p, evidence()).reason or "")
    # Other platforms have no SNP TCB: the rule does not apply to them.
    assert evaluate(p, tdx()).accepted


def test_tdx_sept_ve_disable() -> None:
    prod = Policy.production()
    assert evaluate(prod, tdx()).accepted
    verdict = evaluate(prod, tdx(td_attributes="0000000000000000"))
    assert verdict.reason == (
        "rejected: TDX TD_ATTRIBUTES.SEPT_VE_DISABLE (bit 28) not set, required by policy "
        "'production'"
    )
    assert "without an 8-byte td_attributes" in (
        evaluate(prod, tdx(td_attributes=None)).reason or ""
    )
    relaxed = Policy.parse("[tdx]\nrequire_sept_ve_disable = false\n", source="r")
    assert evaluate(relaxed, tdx(td_attributes="0000000000000000")).accepted


def test_advisories_allow_and_deny() -> None:
    allow = Policy.parse('tcb_statuses = "any"\nadvisories = ["intel-sa-00615"]\n', source="a")
    one = evidence(Platform.SGX, tcb_status="SWHardeningNeeded", advisory_ids=("INTEL-SA-00615",))
    two = evidence(
        Platform.SGX,
        tcb_status="SWHardeningNeeded",
        advisory_ids=("INTEL-SA-00615", "INTEL-SA-00289"),
    )
    assert evaluate(allow, one).accepted
    assert evaluate(allow, two).reason == (
        "rejected: advisory INTEL-SA-00289 not allowed by policy 'a'"
    )
    deny = Policy.parse('reject_advisories = ["INTEL-SA-00289"]\n', source="d")
    assert evaluate(deny, one).accepted
    assert not evaluate(deny, two).accepted


def test_claims_and_min_claims() -> None:
    p = Policy.parse(
        "claims = { vmpl = [0], policy_smt = false }\nmin_claims = { guest_svn = 2 }\n",
        source="c",
    )
    assert evaluate(p, evidence(vmpl=0, policy_smt=False, guest_svn=4)).accepted
    assert evaluate(p, evidence(vmpl=1, policy_smt=False, guest_svn=4)).reason == (
        "rejected: claim vmpl = 1 not among [0] accepted by policy 'c'"
    )
    # A boolean is not an integer, and 0 is not false.
    assert not evaluate(p, evidence(vmpl=False, policy_smt=False, guest_svn=4)).accepted
    assert not evaluate(p, evidence(vmpl=0, policy_smt=0, guest_svn=4)).accepted
    assert evaluate(p, evidence(vmpl=0, policy_smt=False, guest_svn=1)).reason == (
        "rejected: claim guest_svn = 1 below the minimum 2 of policy 'c'"
    )
    assert "claim policy_smt missing" in (evaluate(p, evidence()).reason or "")


def test_claims_by_dotted_path_and_hex_case() -> None:
    p = Policy.parse('[nitro.claims]\n"pcrs.3" = ["4A93"]\n', source="c")
    assert evaluate(p, evidence(Platform.NITRO, pcrs={"3": "4a93"})).accepted
    assert not evaluate(p, evidence(Platform.NITRO, pcrs={"3": "0000"})).accepted
    lst = Policy.parse('[cca.claims]\n"sw_components.0" = "BL"\n', source="c")
    assert evaluate(lst, evidence(Platform.CCA, sw_components=["BL", "M1"])).accepted


# --- parse errors name file, line and field ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("reject_debugg = true\n", r"^p\.toml:1: reject_debugg: unknown key; expected one of"),
        (
            "name = 'x'\n\n[sev-snp]\nmin_tcb = { bl = 3, blx = 1 }\n",
            r"^p\.toml:4: sev-snp\.min_tcb\.blx: unknown TCB component",
        ),
        ("[sev_snp]\nmin_tcb = {}\n", r"^p\.toml:1: sev_snp: unknown key"),
        ("\n\n[sgx]\nfoo = 1\n", r"^p\.toml:4: sgx\.foo: unknown key"),
        (
            "reject_debug = 'yes'\n",
            r"^p\.toml:1: reject_debug: must be true or false, not a string",
        ),
        (
            "tcb_statuses = ['UptoDate']\n",
            r"^p\.toml:1: tcb_statuses: unknown TCB status 'UptoDate'",
        ),
        ("tcb_statuses = []\n", r"p\.toml:1: tcb_statuses: is empty and would reject all evidence"),
        ("version = 2\n", r"^p\.toml:1: version: unsupported policy format version 2"),
        ("name = ''\n", r"^p\.toml:1: name: must be a non-empty"),
        ("x = [1,\n", r"^p\.toml:\d+: invalid TOML"),
        ("platforms = ['sev']\n", r"unknown platform 'sev'"),
        (
            "[sev-snp]\nmin_tcb = { bl = 300 }\n",
            r"p\.toml:2: sev-snp\.min_tcb\.bl: must be an integer 0\.\.255",
        ),
        ("claims = { 'a b' = 1 }\n", r"claims\.a b: not a claim name"),
        (
            "claims = { vmpl = [1.5] }\n",
            r"claims\.vmpl: values must be strings, integers or booleans",
        ),
        ("min_claims = { svn = 'x' }\n", r"min_claims\.svn: must be an integer"),
        ("sgx = 1\n", r"^p\.toml:1: sgx: must be a table"),
        (
            "[sev-snp]\nrequire_sept_ve_disable = true\n",
            r"sev-snp\.require_sept_ve_disable: unknown key",
        ),
    ],
)
def test_parse_errors_are_precise(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Policy.parse(text, source="p.toml")


def test_load_uses_the_file_stem_and_reports_the_path(tmp_path: Path) -> None:
    f = tmp_path / "fleet.toml"
    f.write_text("reject_debug = false\n")
    assert Policy.load(f).name == "fleet"
    assert Policy.named(str(f)) == Policy.load(f)
    f.write_text("\n\nbogus = 1\n")
    with pytest.raises(ConfigError, match=rf"^{f}:3: bogus: unknown key"):
        Policy.load(f)
    f.write_bytes(b"name = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Policy.load(f)
    with pytest.raises(ConfigError, match="cannot read policy file"):
        Policy.load(tmp_path / "missing.toml")


def test_named_unknown_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no built-in policy named 'strict'"):
        Policy.named("strict")


def test_config_error_exit_code_is_not_the_cli_contract() -> None:
    # The CLI maps ConfigError to its own exit 2; the class itself keeps exit 3.
    assert ConfigError.exit_code == 3


# --- round trip, hypothesis -------------------------------------------------------------------

_hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_hex48 = st.binary(min_size=48, max_size=48).map(bytes.hex)
_statuses = st.frozensets(st.sampled_from(sorted(KNOWN_TCB_STATUSES)), min_size=1)
_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_scalars = st.one_of(st.booleans(), st.integers(-5, 5), _hex32, st.sampled_from(["BL", "x"]))


@st.composite
def _policies(draw: st.DrawFn) -> Policy:
    lines = [f"name = {json.dumps(draw(_names))}"]
    if draw(st.booleans()):
        lines.append("allow_insecure = true")
    if draw(st.booleans()):
        lines.append(f"reject_debug = {str(draw(st.booleans())).lower()}")
    status = draw(st.one_of(st.none(), st.just("any"), _statuses))
    if status == "any":
        lines.append('tcb_statuses = "any"')
    elif status is not None:
        lines.append(f"tcb_statuses = {json.dumps(sorted(status))}")
    if draw(st.booleans()):
        lines.append(f"measurements = {json.dumps(draw(st.lists(_hex48, min_size=1, max_size=3)))}")
    if draw(st.booleans()):
        claims = draw(
            st.dictionaries(_names, st.lists(_scalars, min_size=1, max_size=3), min_size=1)
        )
        inner = ", ".join(f"{k} = {policy_mod._toml_value(v)}" for k, v in claims.items())
        lines.append(f"claims = {{ {inner} }}")
    if draw(st.booleans()):
        lines.append("\n[sev-snp]")
        lines.append(f"min_tcb = {{ bl = {draw(st.integers(0, 255))} }}")
        lines.append(f"signers = {json.dumps(draw(st.lists(_hex48, min_size=1, max_size=2)))}")
    if draw(st.booleans()):
        lines.append("\n[sgx]")
        lines.append('measurements = "any"')
        lines.append(f"reject_debug = {str(draw(st.booleans())).lower()}")
    return Policy.parse("\n".join(lines) + "\n", source="gen")


@given(_policies())
def test_to_toml_round_trips(p: Policy) -> None:
    again = Policy.parse(p.to_toml(), source="again")
    assert again == p
    assert again.digest() == p.digest()


@given(_policies(), st.sampled_from(list(Platform)), st.booleans(), st.binary(max_size=64))
def test_evaluate_never_raises_and_reason_iff_rejected(
    p: Policy, platform: Platform, debug: bool, report_data: bytes
) -> None:
    ev = evidence(platform, debug=debug, report_data=report_data, vmpl=0, reported_tcb_fields={})
    verdict = evaluate(p, ev, nonce=b"\x00")
    assert (verdict.reason is None) == verdict.accepted
    assert verdict.accepted == all(c.passed for c in verdict.checks)
    if not verdict.accepted:
        assert verdict.reason is not None and verdict.reason.startswith("rejected: ")


def test_rules_merge_replaces_only_what_a_section_sets() -> None:
    base = Rules(reject_debug=True, tcb_statuses=frozenset({"UpToDate"}))
    merged = Rules(tcb_statuses=ANY).merged_over(base)
    assert merged.reject_debug is True and merged.tcb_statuses is ANY


# --- the documented example, on real evidence -------------------------------------------------

_DOC = Path(__file__).resolve().parents[3] / "docs" / "attestation" / "policy.md"


def _doc_policy() -> Policy:
    text = _DOC.read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    return Policy.parse(block, source="docs/attestation/policy.md")


def test_documented_example_policy_accepts_the_samples_it_names(vectors_dir: Path) -> None:
    from datetime import datetime

    from donjon.attestation.dispatch import verify_evidence
    from donjon.attestation.result import Endorsements

    p = _doc_policy()
    assert p.name == "payments-2026"
    snp = vectors_dir / "sev-snp"
    tdx_dir = vectors_dir / "tdx/dcapqvl-v4"
    samples = [
        (
            Platform.SEV_SNP,
            snp / "milan-trustee/report.bin",
            Endorsements(
                certs=(
                    (snp / "milan-trustee/vcek.der").read_bytes(),
                    (snp / "roots/milan-vcek-ask-ark.pem").read_bytes(),
                )
            ),
            "2025-09-01T00:00:00Z",
        ),
        (
            Platform.TDX,
            tdx_dir / "quote.bin",
            Endorsements(collateral=((tdx_dir / "collateral.json").read_bytes(),)),
            "2025-07-04T00:00:00Z",
        ),
        (
            Platform.NITRO,
            vectors_dir / "nitro/evervault-prod-2022/attestation.cbor",
            Endorsements(),
            "2022-10-13T08:58:02Z",
        ),
    ]
    for platform, path, endorsements, at in samples:
        verified = verify_evidence(
            platform, path.read_bytes(), endorsements=endorsements, now=datetime.fromisoformat(at)
        )
        verdict = evaluate(p, verified)
        assert verdict.accepted, verdict.explain()
        assert {"measurement", "signer", "claims"} & {c.name for c in verdict.checks}
    # The SGX sample's TCB status is not UpToDate: this policy rejects it.
    sgx_dir = vectors_dir / "sgx/dcapqvl"
    verified = verify_evidence(
        Platform.SGX,
        (sgx_dir / "quote.bin").read_bytes(),
        endorsements=Endorsements(collateral=((sgx_dir / "collateral.json").read_bytes(),)),
        now=datetime.fromisoformat("2025-07-04T00:00:00Z"),
    )
    assert evaluate(p, verified).reason == (
        "rejected: TCB status ConfigurationAndSWHardeningNeeded (advisories INTEL-SA-00289, "
        "INTEL-SA-00615) not allowed by policy 'payments-2026'"
    )


@given(st.text(max_size=400))
def test_parse_arbitrary_text_raises_only_config_error(text: str) -> None:
    try:
        Policy.parse(text, source="fuzz.toml")
    except ConfigError as e:
        assert e.message.startswith("fuzz.toml")


_KEYS = [*sorted(policy_mod._TOP_ONLY_KEYS | policy_mod._TOP_RULE_KEYS), "sev-snp", "tdx", "nil"]
_VALUES = st.recursive(
    st.one_of(st.booleans(), st.integers(-3, 300), st.text(max_size=8), st.just("any")),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=5))
def test_parse_well_formed_toml_of_any_shape_raises_only_config_error(doc: dict[str, Any]) -> None:
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{policy_mod._toml_key(k)} = {_toml(v)}" for k, v in value.items())
            lines.append(f"{policy_mod._toml_key(key)} = {{ {inner} }}")
        else:
            lines.append(f"{policy_mod._toml_key(key)} = {_toml(value)}")
    try:
        p = Policy.parse("\n".join(lines) + "\n", source="shape.toml")
    except ConfigError:
        return
    assert Policy.parse(p.to_toml(), source="again") == p


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{policy_mod._toml_key(k)} = {_toml(v)}" for k, v in value.items())
        return f"{{ {inner} }}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return policy_mod._toml_value(value)

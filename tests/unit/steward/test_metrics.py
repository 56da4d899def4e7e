"""Prometheus exposition: families, labels, cumulative buckets, escaping."""

from __future__ import annotations

import re

from donjon.steward.metrics import LATENCY_BUCKETS_SECONDS, Metrics


def test_render_counts_requests_verdicts_and_latency() -> None:
    m = Metrics(replay_cache_size=lambda: 7)
    m.observe_request("/v1/attest", 200, 0.004)
    m.observe_request("/v1/attest", 200, 0.030)
    m.observe_request("/v1/attest", 403, 0.002)
    m.observe_verdict(accepted=True, reason="accepted")
    m.observe_verdict(accepted=False, reason="PolicyError")
    m.observe_nonce()
    text = m.render()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert 'donjon_steward_requests_total{endpoint="/v1/attest",status="200"} 2' in lines
    assert 'donjon_steward_requests_total{endpoint="/v1/attest",status="403"} 1' in lines
    assert 'donjon_steward_verdicts_total{verdict="accept",reason="accepted"} 1' in lines
    assert 'donjon_steward_verdicts_total{verdict="reject",reason="PolicyError"} 1' in lines
    assert "donjon_steward_certificates_issued_total 1" in lines
    assert "donjon_steward_nonces_issued_total 1" in lines
    assert "donjon_steward_replay_cache_entries 7" in lines
    assert "# TYPE donjon_steward_request_duration_seconds histogram" in lines
    buckets = [
        (le, int(n))
        for le, n in re.findall(
            r"donjon_steward_request_duration_seconds_bucket"
            r'\{endpoint="/v1/attest",le="([^"]+)"\} (\d+)',
            text,
        )
    ]
    assert len(buckets) == len(LATENCY_BUCKETS_SECONDS) + 1
    assert dict(buckets)["0.0025"] == 1
    assert dict(buckets)["0.005"] == 2
    assert dict(buckets)["0.05"] == 3
    assert dict(buckets)["+Inf"] == 3
    counts = [n for _, n in buckets]
    assert counts == sorted(counts)
    assert 'donjon_steward_request_duration_seconds_count{endpoint="/v1/attest"} 3' in lines
    assert m.requests("/v1/attest", 200) == 2


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe_verdict(accepted=False, reason='we"ird\\\n')
    assert 'reason="we\\"ird\\\\\\n"' in m.render()

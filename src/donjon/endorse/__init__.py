"""Fetch the endorsements evidence needs from AMD KDS and Intel PCS, with a cache.

Does: given evidence, its platform and the endorsements a caller already has, work out what is
missing (``plan``: a VCEK and the ASK/ARK chain, optionally AMD's CRL; Intel TCB info, QE
identity, the PCK CA and root CA CRLs and their issuer chains), take it from memory, an on-disk
cache or the service (``fetcher``, ``cache``, ``_http``), and return an
:class:`~donjon.attestation.result.Endorsements` value that the verifiers take unchanged. It
spares the services (``upstream``): a failed fetch is remembered for a while, each service host
has a request budget, and a service's HTTP 429 pauses every request to it.

Does not: verify anything, or trust anything it fetched. The verifiers check every signature,
chain, CRL and date on every use, so the cache is a performance feature, not a trust anchor
(``docs/attestation/endorsements.md``). It does not read the clock either: reuse is judged at
the verification's ``now``, and fetch times come from an injected clock.

All I/O of attestation lives here and in the CLI; ``donjon.attestation`` stays pure.

Example::

    from datetime import UTC, datetime
    from pathlib import Path
    from donjon.attestation.dispatch import verify_evidence
    from donjon.attestation.result import Endorsements, Platform
    from donjon.endorse import EndorsementFetcher, FetchConfig

    report = Path("report.bin").read_bytes()
    now = datetime.now(UTC)
    with EndorsementFetcher(FetchConfig(cache_dir=Path("cache")), clock=lambda: now) as f:
        done = f.complete(Platform.SEV_SNP, report, Endorsements(), now=now)
    verify_evidence("sev-snp", report, endorsements=done.endorsements, now=now)
"""

from __future__ import annotations

from donjon._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_KDS_URL": "config",
    "DEFAULT_PCS_URL": "config",
    "FetchConfig": "config",
    "Timeouts": "config",
    "UpstreamBudget": "config",
    "default_cache_dir": "config",
    "EndorsementCache": "cache",
    "Document": "documents",
    "read_document": "documents",
    "Completion": "fetcher",
    "EndorsementFetcher": "fetcher",
    "FetchedDocument": "fetcher",
    "FetchOutcome": "fetcher",
    "Origin": "fetcher",
    "DocumentKind": "plan",
    "DocumentRequest": "plan",
    "Plan": "plan",
    "Service": "plan",
    "plan_endorsements": "plan",
    "EndorsementConnectError": "errors",
    "EndorsementFetchError": "errors",
    "EndorsementTimeoutError": "errors",
    "EndorsementUnavailableError": "errors",
    "FetchProblem": "errors",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

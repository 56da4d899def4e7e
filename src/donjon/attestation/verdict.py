"""The outcome of applying a policy to verified evidence: a verdict that explains itself.

Does: hold the decision, the first reason for a rejection, every check that ran (so a dry run can
show why evidence passed or failed), and render all of it as the JSON object of the
``donjon attest verify --json`` contract.
Does not: decide anything; :mod:`donjon.attestation.policy` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from donjon.attestation.result import Platform, VerifiedEvidence
from donjon.errors import Error

VERDICT_ACCEPT = "accept"
VERDICT_REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Check:
    """One policy check and how it came out.

    Attributes:
        name: a stable identifier (``"debug"``, ``"tcb_status"``, ``"measurement"``, ...).
        passed: whether the evidence satisfied it.
        detail: for a failure, the full rejection reason (``"rejected: ... by policy 'x'"``);
            otherwise what was found (``"debug disabled"``, ``"not checked: ..."``).
    """

    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The check as ``{"name", "passed", "detail"}``."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A policy decision on authentic evidence.

    Attributes:
        accepted: whether the policy accepts the evidence.
        reason: why it was rejected (the first failed check), or None when accepted.
        policy: the name of the policy applied.
        evidence: the verified evidence the decision was made on.
        policy_digest: ``sha256:<hex>`` of the policy's content (see ``Policy.digest``), so a
            result can name exactly which rules were applied.
        checks: every check that ran, in order, passed or not.
    """

    accepted: bool
    reason: str | None
    policy: str
    evidence: VerifiedEvidence
    policy_digest: str = ""
    checks: tuple[Check, ...] = ()

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that did not pass."""
        return tuple(c for c in self.checks if not c.passed)

    def explain(self) -> str:
        """A few lines for humans: the decision, then one line per check (✔ passed, ✗ failed)."""
        head = (
            f"accepted by policy '{self.policy}'"
            if self.accepted
            else (self.reason or f"rejected by policy '{self.policy}'")
        )
        lines = [head]
        lines += [f"  {'✔' if c.passed else '✗'} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object (see ``docs/commands/attest.md``)."""
        return {
            "verdict": VERDICT_ACCEPT if self.accepted else VERDICT_REJECT,
            "platform": str(self.evidence.platform),
            "reason": self.reason,
            "policy": self.policy,
            "policy_digest": self.policy_digest,
            "claims": self.evidence.to_json(),
            "checks": [c.to_json() for c in self.checks],
        }


def failure_to_json(
    platform: Platform, error: Error, *, policy: str, policy_digest: str = ""
) -> dict[str, Any]:
    """The ``--json`` object for evidence that did not verify (no claims can be trusted).

    Args:
        platform: the platform the evidence was verified as.
        error: the verification error; its class name becomes ``"error"``.
        policy: the policy that would have applied.
        policy_digest: that policy's digest.
    """
    return {
        "verdict": VERDICT_REJECT,
        "platform": str(platform),
        "reason": f"verification failed: {error.diagnostics()}",
        "policy": policy,
        "policy_digest": policy_digest,
        "claims": {},
        "checks": [],
        "error": type(error).__name__,
    }


__all__ = ["VERDICT_ACCEPT", "VERDICT_REJECT", "Check", "Verdict", "failure_to_json"]

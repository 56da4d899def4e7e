"""A workload's identity: one URI for "this module, under this config, with these arguments".

The keep runtime names the workload it is about to run with this URI when it asks Steward for
the workload's secrets (a URI SAN in its CSR, signed by the key its evidence binds), and a
release rule in Steward's policy names the workloads a secret may go to. The same URI comes
out whichever way the workload arrived (sent by ``donjon deploy`` or fetched from a registry),
and ``donjon workload id`` computes it before any Keep exists, so the owner of a secret can
write the rule::

    donjon:workload:sha256:<hex of SHA-256(deterministic CBOR of the document below)>

    {"v": 1,
     "module": SHA-256 of the Wasm module (32 bytes),
     "config": the config's plain-data form (WorkloadConfig.to_dict) without "source",
     "program": argv[0] in the Keep,
     "args": the arguments after the config's own}

Everything that decides what the workload does is in it: the code, every grant of its config
(environment, sockets and their trust anchors, limits, which secrets it asks for), and its
command line; the file name the config was read from is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from donjon.keep.config import DEFAULT_ARGV0, WorkloadConfig
from donjon.wire.cbor import encode

__all__ = ["IDENTITY_VERSION", "WORKLOAD_URI_PREFIX", "workload_identity"]

IDENTITY_VERSION = 1
WORKLOAD_URI_PREFIX = "donjon:workload:sha256:"


def workload_identity(
    module_sha256: bytes,
    config: WorkloadConfig,
    *,
    program: str = DEFAULT_ARGV0,
    args: Sequence[str] = (),
) -> str:
    """The ``donjon:workload:sha256:<hex>`` URI of a workload (see the module docstring).

    Args:
        module_sha256: SHA-256 of the module's bytes.
        config: its validated config.
        program: ``argv[0]`` in the Keep.
        args: the arguments after the config's ``args``.
    """
    if len(module_sha256) != hashlib.sha256().digest_size:
        raise ValueError("module_sha256 must be a 32-byte SHA-256 digest")
    config_dict = config.to_dict()
    config_dict.pop("source", None)
    document = {
        "v": IDENTITY_VERSION,
        "module": module_sha256,
        "config": config_dict,
        "program": program,
        "args": list(args),
    }
    return WORKLOAD_URI_PREFIX + hashlib.sha256(encode(document)).hexdigest()

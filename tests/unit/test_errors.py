from __future__ import annotations

import pytest

from donjon import errors


def test_abstract_bases_refuse_instantiation() -> None:
    for cls in (errors.Error, errors.VerificationError, errors.WireError):
        with pytest.raises(TypeError):
            cls("x")


def test_every_public_error_is_an_error_with_diagnostics() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.Error)
    e = errors.SignatureError("report signature does not verify")
    assert e.diagnostics() == "report signature does not verify"
    assert errors.UsageError.exit_code == 2
    assert errors.WorkloadError.exit_code >= 125
    assert errors.TrapError.exit_code >= 125

"""The registry's specific errors: one class per way a package can fail to build, move or verify.

Each is a subclass of the shared tree in :mod:`donjon.errors`, so ``except RegistryError`` or
``except VerificationError`` still catches them::

    RegistryError
    ├─ NotFoundError                  (shared) no such repository, tag, manifest or blob
    ├─ ConflictError                  (shared)
    ├─ PackageFormatError             a manifest, index or layout that is not a donjon package
    ├─ DigestMismatchError            bytes that do not hash to the digest they were asked for
    ├─ SizeLimitError                 a manifest or blob larger than declared or than a limit
    ├─ RegistryAuthError              the registry refused our credentials (401/403)
    └─ RegistryResponseError          any other unexpected answer (status, header, shape)
    VerificationError
    └─ SignatureError                 (shared) a signature that does not verify
       └─ UnsignedPackageError        no signature by any required publisher key
    TransportError
    └─ ConnectError                   (shared) the registry could not be reached
    ConfigError
    ├─ CredentialsError               a credentials file that cannot be used
    └─ UsageError
       └─ ReferenceSyntaxError        a reference that is not REGISTRY/REPO[:TAG][@DIGEST]

Errors carry their data as attributes (``status_code``, ``expected``, ``actual``) so a caller can
branch without parsing text. Messages never contain credentials or tokens.
"""

from __future__ import annotations

from donjon.errors import ConfigError, RegistryError, SignatureError, UsageError

__all__ = [
    "CredentialsError",
    "DigestMismatchError",
    "PackageFormatError",
    "ReferenceSyntaxError",
    "RegistryAuthError",
    "RegistryResponseError",
    "SizeLimitError",
    "UnsignedPackageError",
]


class PackageFormatError(RegistryError):
    """A manifest, index, signature artifact or image layout that is not what donjon accepts."""


class DigestMismatchError(RegistryError):
    """Bytes whose digest is not the one they were requested by.

    Attributes:
        expected: the digest that was asked for (``sha256:...``).
        actual: the digest of the bytes received.
    """

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class SizeLimitError(RegistryError):
    """A manifest or blob larger than its descriptor says or than a configured limit.

    Attributes:
        limit: the limit that was exceeded, in bytes.
    """

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class RegistryAuthError(RegistryError):
    """The registry (or its token service) refused access.

    Attributes:
        status_code: the HTTP status (401 or 403).
    """

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RegistryResponseError(RegistryError):
    """An answer the distribution spec does not allow here (status, headers or body shape).

    Attributes:
        status_code: the HTTP status, or ``None`` when the status was fine but the body was not.
        error_codes: the ``errors[].code`` values of an OCI error body, if any.
    """

    def __init__(
        self, message: str, *, status_code: int | None, error_codes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_codes = error_codes


class UnsignedPackageError(SignatureError):
    """No signature by any of the required publisher keys was found next to the package.

    Attributes:
        signers: fingerprints (``sha256:...``) of the other keys whose signatures were found.
    """

    def __init__(self, message: str, *, signers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.signers = signers


class CredentialsError(ConfigError):
    """A credentials file or variable that cannot be used (it says which, never the secret)."""


class ReferenceSyntaxError(UsageError):
    """A package reference that is not ``REGISTRY/REPOSITORY[:TAG][@DIGEST]``."""

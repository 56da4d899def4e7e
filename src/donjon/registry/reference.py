"""Package references: ``REGISTRY/REPOSITORY[:TAG][@DIGEST]`` (pure).

The grammar is the distribution project's reference grammar (``reference/regexp.go``), which
the OCI distribution spec's ``<name>`` and ``<reference>`` follow:

* REGISTRY is a host name, an IPv4 address or a bracketed IPv6 address, with an optional port:
  ``localhost:5000``, ``127.0.0.1:5000``, ``[::1]:5000``, ``ghcr.io``.
* REPOSITORY is ``/``-separated components of ``[a-z0-9]+`` joined by ``.``, ``_``, ``__`` or
  ``-``; at most 255 characters with the registry (``reference.NameTotalLengthMax``).
* TAG is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``.
* DIGEST is ``sha256:<64 hex>`` or ``sha512:<128 hex>``.

Rule 1: the registry is always explicit. Docker's implicit ``docker.io/library/`` prefix would
make ``hello:1.0`` mean a public registry by accident; donjon asks for the full name instead.
Rule 2: a reference with both a tag and a digest means the digest; the tag is only a label.

Example::

    >>> ref = Reference.parse("localhost:5000/apps/hello:1.0")
    >>> ref.registry, ref.repository, ref.tag, ref.digest
    ('localhost:5000', 'apps/hello', '1.0', None)
    >>> ref.is_loopback
    True
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from donjon.registry.errors import PackageFormatError, ReferenceSyntaxError
from donjon.registry.oci import Digest

__all__ = ["MAX_NAME_BYTES", "Reference"]

MAX_NAME_BYTES = 255  # characters of REGISTRY/REPOSITORY; distribution reference.NameTotalLengthMax
_MAX_REFERENCE_BYTES = 1024  # characters of a whole reference; bounds work on hostile input

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
_EXAMPLE = "localhost:5000/hello:1.0 or ghcr.io/org/hello@sha256:<hex>"


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed package reference.

    Attributes:
        registry: ``host[:port]`` as written (IPv6 hosts keep their brackets).
        repository: the repository path inside the registry.
        tag: the tag, if one was given.
        digest: the manifest digest, if one was given.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse a reference.

        Raises:
            ReferenceSyntaxError: not ``REGISTRY/REPOSITORY[:TAG][@DIGEST]``, with the reason.
        """
        if len(text) > _MAX_REFERENCE_BYTES:
            raise ReferenceSyntaxError(
                f"reference is {len(text)} characters; the limit is {_MAX_REFERENCE_BYTES}"
            )
        if not text or text != text.strip():
            raise ReferenceSyntaxError(f"reference {text!r} is empty or has spaces around it")
        rest, at, digest_text = text.partition("@")
        digest = None
        if at:
            try:
                digest = Digest.parse(digest_text, what=f"digest in {text!r}")
            except PackageFormatError as e:
                raise ReferenceSyntaxError(e.message) from e
        registry, slash, path = rest.partition("/")
        if not slash or not _is_registry_host(registry):
            raise ReferenceSyntaxError(
                f"reference {text!r} does not start with a registry; write the full name, "
                f"e.g. {_EXAMPLE}"
            )
        _check_registry(registry, text)
        # A ':' after the last '/' introduces the tag (a ':' before it belongs to the port).
        last = path.rfind("/")
        colon = path.find(":", last + 1)
        tag = None
        if colon >= 0:
            path, tag = path[:colon], path[colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise ReferenceSyntaxError(
                    f"tag {tag[:140]!r} in {text!r} is not valid: use letters, digits, '_', '.' "
                    "and '-', at most 128 characters, not starting with '.' or '-'"
                )
        for component in path.split("/"):
            if not _COMPONENT.fullmatch(component):
                raise ReferenceSyntaxError(
                    f"repository {path!r} in {text!r} is not valid: each '/'-separated part is "
                    "lowercase letters and digits, joined by '.', '_', '__' or '-'"
                )
        if len(registry) + 1 + len(path) > MAX_NAME_BYTES:
            raise ReferenceSyntaxError(
                f"name {registry}/{path} is longer than {MAX_NAME_BYTES} characters"
            )
        if tag is None and digest is None:
            raise ReferenceSyntaxError(
                f"reference {text!r} names no tag or digest; add :TAG or @sha256:<hex>"
            )
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``REGISTRY/REPOSITORY``."""
        return f"{self.registry}/{self.repository}"

    @property
    def manifest_reference(self) -> str:
        """What goes in ``/v2/<name>/manifests/<reference>``: the digest if known, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        if self.tag is None:  # pragma: no cover - parse() and with_*() never allow this
            raise ReferenceSyntaxError(f"{self.name} has neither tag nor digest")
        return self.tag

    @property
    def host(self) -> str:
        """The registry's host without port and brackets."""
        if self.registry.startswith("["):
            return self.registry[1 : self.registry.index("]")]
        return self.registry.rpartition(":")[0] if ":" in self.registry else self.registry

    @property
    def is_loopback(self) -> bool:
        """Whether the registry is on this machine (``localhost``, 127.0.0.0/8 or ``::1``)."""
        host = self.host
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def with_digest(self, digest: Digest) -> Reference:
        """The same reference pinned to *digest* (the tag is kept as a label)."""
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """The same repository at *tag*, without a digest.

        Raises:
            ReferenceSyntaxError: *tag* is not a valid tag.
        """
        if not _TAG.fullmatch(tag):
            raise ReferenceSyntaxError(f"tag {tag[:140]!r} is not valid")
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _is_registry_host(component: str) -> bool:
    # distribution's rule for telling a registry from a repository's first component.
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.startswith("[")
        or component.lower() != component
    )


def _check_registry(registry: str, text: str) -> None:
    if registry.startswith("["):
        end = registry.find("]")
        if end < 0:
            raise ReferenceSyntaxError(f"registry {registry!r} in {text!r} has no closing ']'")
        host, after = registry[1:end], registry[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ReferenceSyntaxError(
                f"registry {registry!r} in {text!r} is not a bracketed IPv6 address"
            ) from None
        port = after[1:] if after.startswith(":") else None
        if after and port is None:
            raise ReferenceSyntaxError(f"registry {registry!r} in {text!r} is not valid")
    else:
        host, colon, port_text = registry.partition(":")
        port = port_text if colon else None
        if not host or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
            raise ReferenceSyntaxError(f"registry host {host!r} in {text!r} is not a valid name")
    if port is not None and (not _PORT.fullmatch(port) or not 0 < int(port) < 65536):
        raise ReferenceSyntaxError(f"registry port {port!r} in {text!r} is not a port number")

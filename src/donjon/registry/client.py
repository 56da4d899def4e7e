"""An OCI distribution client (distribution spec v1.1) on httpx, for untrusted registries.

Does: manifests (HEAD, GET, PUT), blobs (existence, upload as one PUT or in PATCH chunks,
streaming download with size limits and digest check, or download into memory), the referrers
API, and authentication
(HTTP Basic and the ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` token dance of
the distribution token spec).
Does not: decide what a package is (``package``), read credentials from files or the
environment (``credentials`` parses, the CLI reads), or trust anything the registry says: every
byte it returns is checked against a digest by the caller or here.

Rule 1: bodies are read with a bound, chosen before the first byte arrives. A registry that
sends more than the descriptor says, or more than the limit, is cut off there.
Rule 2: blob digests are checked while streaming and before the bytes count as received.
Rule 3: credentials go only where they are useful and safe: to the registry and to its token
realm over HTTPS, or over plain HTTP only on loopback. Tokens are cached per repository in
memory and never logged.

Example (against a registry on 127.0.0.1)::

    with RegistryClient.for_reference(ref) as client:
        manifest = client.get_manifest(ref.repository, ref.manifest_reference)
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from donjon import __version__
from donjon._closing import Closing
from donjon.errors import ConnectError, NotFoundError, TransportTimeoutError
from donjon.registry._transport import DirectGet, LargeReadTransport, SizedBuffer
from donjon.registry.credentials import Challenge, Credentials, parse_challenges
from donjon.registry.errors import (
    DigestMismatchError,
    PackageFormatError,
    RegistryAuthError,
    RegistryResponseError,
    SizeLimitError,
)
from donjon.registry.oci import (
    MEDIA_TYPE_IMAGE_INDEX,
    MEDIA_TYPE_IMAGE_MANIFEST,
    Descriptor,
    Digest,
    load_json_object,
    parse_image_index,
)
from donjon.registry.reference import Reference

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MONOLITHIC_MAX_BYTES",
    "DEFAULT_TIMEOUT_S",
    "MAX_INDEX_BYTES",
    "MAX_INDEX_ENTRIES",
    "MAX_MANIFEST_BYTES",
    "BlobSink",
    "BlobSource",
    "FetchedManifest",
    "PutManifestResult",
    "RegistryClient",
    "file_source",
]

_logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0  # seconds per connect/read/write; a stalled registry fails, not hangs
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Largest manifest read at all (bytes): the distribution spec's 4 MiB that registries accept.
Callers that know the type pass a tighter bound (a package manifest is under 2 KiB)."""
MAX_INDEX_BYTES = 4 * 1024 * 1024  # bytes; a referrers index may list many artifacts
MAX_INDEX_ENTRIES = 10_000  # descriptors in one index; bounds the objects we build from it
DEFAULT_MONOLITHIC_MAX_BYTES = 64 * 1024 * 1024
"""Blobs up to this size (bytes) are uploaded with one PUT; larger ones in PATCH chunks, so no
request exceeds what proxies in front of registries commonly allow."""
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024  # bytes per PATCH when uploading in chunks
_MAX_ERROR_BODY_BYTES = 64 * 1024  # bytes of an error body read to extract error codes
_MAX_TOKEN_RESPONSE_BYTES = 64 * 1024  # bytes; a registry token JSON is a few KiB
_STREAM_PIECE_BYTES = 1024 * 1024  # bytes per read from a file being uploaded
_MAX_LOCATION_BYTES = 8192  # bytes of an upload Location header
_SINGLE_POST_MAX_BYTES = 256 * 1024
"""Blobs up to this size (bytes) are offered in the POST that opens the upload: one round
trip instead of two for the config, the empty config and signatures."""
_THREADED_HASH_BYTES = 4 * 1024 * 1024
"""Blobs from this size (bytes) are hashed on a second thread while the next piece arrives:
hashlib and socket reads both release the GIL, and on loopback hashing was a third of the time."""
_HASH_QUEUE_PIECES = 8  # pieces waiting to be hashed at most; bounds what is kept alive
_DIRECT_MIN_BYTES = 1024 * 1024
"""Blobs from this size (bytes) are read with a ``DirectGet`` where it applies (see
``RegistryClient.reads_direct``); smaller ones reuse the kept-alive httpx connection."""
_DIRECT_PIECE_BYTES = 4 * 1024 * 1024
"""Bytes asked of the socket per ``readinto``, and hashed per step; measured best of 256 KiB,
1 MiB and 4 MiB on loopback (as ``_transport.READ_BYTES``)."""

_USER_AGENT = f"donjon/{__version__}"

_MANIFEST_ACCEPT = ", ".join(
    (
        MEDIA_TYPE_IMAGE_MANIFEST,
        MEDIA_TYPE_IMAGE_INDEX,
        # Asked for so a registry answers with what it has and we can say what it is.
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """Manifest bytes as received, with the digest computed over them here.

    Attributes:
        raw: the exact bytes.
        media_type: the ``Content-Type`` without parameters.
        digest: the digest of ``raw`` (the requested digest's algorithm, else sha256).
    """

    raw: bytes
    media_type: str
    digest: Digest

    @property
    def descriptor(self) -> Descriptor:
        """The descriptor of this manifest."""
        return Descriptor(media_type=self.media_type, digest=self.digest, size=len(self.raw))


@dataclass(frozen=True, slots=True)
class PutManifestResult:
    """What a registry said after storing a manifest.

    Attributes:
        digest: the manifest's digest (checked against the registry's ``Docker-Content-Digest``).
        subject: the ``OCI-Subject`` header: the registry indexed the manifest's ``subject``
            for the referrers API (distribution spec v1.1). ``None`` means the client must
            maintain the referrers tag schema itself.
    """

    digest: Digest
    subject: Digest | None


class BlobSink(Protocol):
    """Where :meth:`RegistryClient.fetch_blob` writes: a binary file, ``BytesIO``, ..."""

    def write(self, piece: bytes, /) -> object:
        """Take the next piece of the blob."""
        ...


BlobSource = bytes | Callable[[], Iterator[bytes]]
"""Blob content: bytes, or a factory of a fresh iterator (so a request can be sent again)."""


class RegistryClient(Closing):
    """A client for one registry (``host[:port]``).

    Args:
        registry: ``host[:port]``, as in a :class:`~donjon.registry.reference.Reference`.
        credentials: username and password/token, or ``None`` for anonymous access.
        plain_http: talk HTTP instead of HTTPS. Allowed for any host (a test or a relay on the
            same machine), but credentials are then sent only to loopback addresses.
        transport: an httpx transport, e.g. one that goes through the host relay.
        verify: TLS verification: ``True`` (system roots), an ``ssl.SSLContext``, or a CA path.
        timeout_s: seconds for each connect, read and write.
        monolithic_max_bytes: blobs up to this size go in one PUT.
        chunk_bytes: size of each PATCH for larger blobs.
    """

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool = False,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        monolithic_max_bytes: int = DEFAULT_MONOLITHIC_MAX_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if chunk_bytes <= 0 or monolithic_max_bytes < 0:
            raise ValueError("chunk_bytes must be positive and monolithic_max_bytes >= 0")
        self.registry = registry
        self._credentials = credentials
        self._base = f"{'http' if plain_http else 'https'}://{registry}"
        self._plain_http = plain_http
        self._monolithic_max = monolithic_max_bytes
        self._chunk = chunk_bytes
        self._timeout_s = timeout_s
        # A loopback registry over plain HTTP, with no transport of the caller's to go through:
        # large reads (LargeReadTransport) and large blobs straight into memory (DirectGet).
        self._direct = (
            transport is None and plain_http and _is_loopback_host(httpx.URL(self._base).host)
        )
        if self._direct:
            transport = LargeReadTransport(verify=verify)
        self._http = httpx.Client(
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
        )
        self._use_basic = False
        # repository -> (token, actions it was granted for); the token itself is never logged.
        self._tokens: dict[str, tuple[str, frozenset[str]]] = {}

    @classmethod
    def for_reference(
        cls,
        ref: Reference,
        *,
        credentials: Credentials | None = None,
        plain_http: bool | None = None,
        **kwargs: Any,
    ) -> RegistryClient:
        """A client for *ref*'s registry. ``plain_http=None`` means HTTP for loopback
        registries (``localhost``, 127.0.0.0/8, ``::1``) and HTTPS for every other."""
        plain = ref.is_loopback if plain_http is None else plain_http
        return cls(ref.registry, credentials=credentials, plain_http=plain, **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self._base!r})"

    @property
    def reads_direct(self) -> bool:
        """Whether :meth:`read_blob` reads large blobs straight into memory (plain HTTP to a
        loopback registry, no transport given); otherwise it streams them through httpx."""
        return self._direct

    # -- manifests -----------------------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """What the registry says about a manifest, without its body; ``None`` if absent.

        The digest here is the registry's claim (``Docker-Content-Digest``); use
        :meth:`get_manifest` to have one computed over the bytes.
        """
        url = self._url(repository, "manifests", reference)
        with self._open("HEAD", url, repository, headers={"Accept": _MANIFEST_ACCEPT}) as resp:
            if resp.status_code == httpx.codes.NOT_FOUND:
                return None
            self._check(resp, f"manifest {repository}:{reference}", (200,))
            digest_text = resp.headers.get("docker-content-digest")
            length = resp.headers.get("content-length", "")
            if digest_text is None or not length.isdigit():
                raise RegistryResponseError(
                    f"{self.registry} answered HEAD of {repository}:{reference} without "
                    "Docker-Content-Digest and Content-Length",
                    status_code=resp.status_code,
                )
            return Descriptor(
                media_type=_content_type(resp),
                digest=_registry_digest(digest_text, self.registry),
                size=int(length),
            )

    def get_manifest(
        self, repository: str, reference: str | Digest, *, max_bytes: int = MAX_MANIFEST_BYTES
    ) -> FetchedManifest:
        """Fetch a manifest by tag or digest; by digest, the bytes must match it.

        Raises:
            NotFoundError: no such manifest or repository.
            SizeLimitError: larger than *max_bytes*.
            DigestMismatchError: by digest, other bytes came back; by tag, the bytes do not match
                the registry's own ``Docker-Content-Digest``.
        """
        wanted = reference if isinstance(reference, Digest) else None
        url = self._url(repository, "manifests", str(reference))
        what = f"manifest {repository}{'@' if wanted else ':'}{reference}"
        with self._open("GET", url, repository, headers={"Accept": _MANIFEST_ACCEPT}) as resp:
            self._check(resp, what, (200,))
            raw = _read_bounded(resp, max_bytes, what)
            claimed = resp.headers.get("docker-content-digest")
            media_type = _content_type(resp)
        digest = Digest.of(raw, wanted.algorithm if wanted else "sha256")
        if wanted is not None and digest != wanted:
            raise DigestMismatchError(
                f"{self.registry} served {what} with bytes that hash to {digest}; refusing it",
                expected=str(wanted),
                actual=str(digest),
            )
        if wanted is None and claimed is not None:
            claimed_digest = _registry_digest(claimed, self.registry)
            if Digest.of(raw, claimed_digest.algorithm) != claimed_digest:
                raise DigestMismatchError(
                    f"{self.registry} says {what} is {claimed_digest} but served other bytes",
                    expected=str(claimed_digest),
                    actual=str(digest),
                )
        return FetchedManifest(raw=raw, media_type=media_type, digest=digest)

    def put_manifest(
        self, repository: str, reference: str | Digest, raw: bytes, media_type: str
    ) -> PutManifestResult:
        """Store a manifest under a tag or its digest.

        Raises:
            RegistryResponseError: refused (e.g. a blob it references is missing), or the
                registry reported another digest than the bytes have.
        """
        url = self._url(repository, "manifests", str(reference))
        digest = Digest.of(raw)
        with self._open(
            "PUT", url, repository, push=True, content=raw, headers={"Content-Type": media_type}
        ) as resp:
            self._check(resp, f"upload of manifest {repository}:{reference}", (201,))
            claimed = resp.headers.get("docker-content-digest")
            subject = resp.headers.get("oci-subject")
        if claimed is not None and _registry_digest(claimed, self.registry) != digest:
            raise RegistryResponseError(
                f"{self.registry} stored manifest {digest} but reports {claimed}",
                status_code=None,
            )
        return PutManifestResult(
            digest=digest,
            subject=_registry_digest(subject, self.registry) if subject else None,
        )

    def referrers(
        self, repository: str, digest: Digest, *, artifact_type: str | None = None
    ) -> tuple[Descriptor, ...] | None:
        """The referrers of a manifest via the referrers API; ``None`` if the registry has none.

        Results are filtered by *artifact_type* here too, whatever the registry applied.
        """
        url = self._url(repository, "referrers", str(digest))
        params = {"artifactType": artifact_type} if artifact_type else None
        what = f"referrers of {repository}@{digest}"
        with self._open("GET", url, repository, params=params) as resp:
            if resp.status_code == httpx.codes.NOT_FOUND:
                # distribution spec v1.1: 404 means the API is not supported; use the tag schema.
                return None
            self._check(resp, what, (200,))
            raw = _read_bounded(resp, MAX_INDEX_BYTES, what)
        entries = parse_image_index(
            raw, what=what, max_bytes=MAX_INDEX_BYTES, max_entries=MAX_INDEX_ENTRIES
        )
        if artifact_type is not None:
            entries = tuple(e for e in entries if e.artifact_type == artifact_type)
        return entries

    # -- blobs ---------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: Digest, *, push: bool = False) -> bool:
        """Whether the registry has the blob (a HEAD). *push* asks for a push token up front."""
        url = self._url(repository, "blobs", str(digest))
        with self._open("HEAD", url, repository, push=push) as resp:
            if resp.status_code == httpx.codes.NOT_FOUND:
                return False
            self._check(resp, f"blob {repository}@{digest}", (200,))
            return True

    def push_blob(self, repository: str, descriptor: Descriptor, source: BlobSource) -> bool:
        """Upload a blob unless the registry already has it.

        Args:
            repository: the repository.
            descriptor: the blob's digest and size (the bytes are not re-hashed here; the
                registry checks them against the digest and refuses a mismatch).
            source: the bytes, or a factory of iterators over them.

        Returns:
            ``True`` if it was uploaded, ``False`` if the registry already had it.

        Raises:
            RegistryResponseError: the registry refused the upload or the digest.
        """
        if self.blob_exists(repository, descriptor.digest, push=True):
            return False
        what = f"upload of blob {descriptor.digest} to {repository}"
        single = isinstance(source, bytes) and descriptor.size <= _SINGLE_POST_MAX_BYTES
        # distribution spec "single POST": a small blob in the request that opens the upload.
        # A registry without it answers 202 with a Location, and the PUT below follows.
        with self._open(
            "POST",
            self._url(repository, "blobs", "uploads/"),
            repository,
            push=True,
            params={"digest": str(descriptor.digest)} if single else None,
            content=source if single else None,
            headers={"Content-Type": "application/octet-stream"} if single else None,
        ) as resp:
            if single and resp.status_code == httpx.codes.CREATED:
                self._check_blob_digest(resp, descriptor.digest)
                return True
            self._check(resp, what, (202,))
            location = self._location(resp, what)
        if descriptor.size <= self._monolithic_max:
            final = httpx.URL(location).copy_merge_params({"digest": str(descriptor.digest)})
            with self._open(
                "PUT",
                str(final),
                repository,
                push=True,
                content=source,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(descriptor.size),
                },
            ) as resp:
                self._check(resp, what, (201,))
                self._check_blob_digest(resp, descriptor.digest)
            return True
        offset = 0
        for piece in _rechunk(source() if callable(source) else source, self._chunk):
            end = offset + len(piece) - 1
            with self._open(
                "PATCH",
                location,
                repository,
                push=True,
                content=piece,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(piece)),
                },
            ) as resp:
                self._check(resp, what, (202,))
                location = self._location(resp, what)
            offset = end + 1
        if offset != descriptor.size:
            raise ValueError(
                f"blob source gave {offset} bytes; the descriptor says {descriptor.size}"
            )
        final = httpx.URL(location).copy_merge_params({"digest": str(descriptor.digest)})
        with self._open(
            "PUT",
            str(final),
            repository,
            push=True,
            content=b"",
            headers={"Content-Length": "0"},
        ) as resp:
            self._check(resp, what, (201,))
            self._check_blob_digest(resp, descriptor.digest)
        return True

    def fetch_blob(
        self, repository: str, descriptor: Descriptor, sink: BlobSink, *, max_bytes: int
    ) -> None:
        """Stream a blob into *sink*, checking its size and digest.

        The sink receives bytes before they are verified: give a temporary file or buffer and
        keep it only if this returns. To keep the blob in memory, :meth:`read_blob` is faster.

        Raises:
            SizeLimitError: the descriptor's size is over *max_bytes*, or the registry sent
                more bytes than the descriptor says (cut off at that point).
            DigestMismatchError: the bytes do not hash to the descriptor's digest.
            RegistryResponseError: fewer bytes than the descriptor says.
        """
        what = self._check_blob_size(repository, descriptor, max_bytes)
        self._fetch_blob(repository, descriptor, sink, what, direct=True)

    def _fetch_blob(
        self, repository: str, descriptor: Descriptor, sink: BlobSink, what: str, *, direct: bool
    ) -> None:
        if direct and self._direct and descriptor.size >= _DIRECT_MIN_BYTES:
            # One scratch buffer, and one copy per piece into the bytes the sink keeps.
            scratch = memoryview(bytearray(min(descriptor.size, _DIRECT_PIECE_BYTES)))

            def into_sink(get: DirectGet, hasher: _StreamHasher) -> int:
                received = 0
                while received < descriptor.size:
                    count = get.readinto(scratch[: descriptor.size - received])
                    if not count:
                        break
                    piece = bytes(scratch[:count])
                    hasher.update(piece)
                    sink.write(piece)
                    received += count
                return received

            if self._direct_get(repository, descriptor, what, into_sink):
                return
        url = self._url(repository, "blobs", str(descriptor.digest))
        threaded = descriptor.size >= _THREADED_HASH_BYTES
        with _StreamHasher(descriptor.digest, threaded=threaded) as hasher:
            received = self._stream_blob(url, repository, descriptor, what, hasher, sink)
            self._check_blob_received(received, descriptor, what)
            actual = hasher.result()
        self._check_blob_digest_of(actual, descriptor, what)

    def read_blob(self, repository: str, descriptor: Descriptor, *, max_bytes: int) -> bytes:
        """Download a blob into memory, checking its size and digest, and return it.

        The checks are :meth:`fetch_blob`'s. Where :attr:`reads_direct` holds, a blob of a MiB
        or more is read from the socket straight into a buffer of its declared size and hashed
        while it arrives, so its bytes are never copied.

        Raises:
            SizeLimitError: the descriptor's size is over *max_bytes*, or the registry
                announced or sent more bytes than the descriptor says.
            DigestMismatchError: the bytes do not hash to the descriptor's digest.
            RegistryResponseError: fewer bytes than the descriptor says.
            NotFoundError, RegistryAuthError, TransportError: as for :meth:`fetch_blob`.
        """
        what = self._check_blob_size(repository, descriptor, max_bytes)
        if self._direct and descriptor.size >= _DIRECT_MIN_BYTES:
            buffer = SizedBuffer(descriptor.size)
            with buffer.view() as whole:

                def into_buffer(get: DirectGet, hasher: _StreamHasher) -> int:
                    received = 0
                    while received < descriptor.size:
                        count = get.readinto(whole[received : received + _DIRECT_PIECE_BYTES])
                        if not count:
                            break
                        hasher.update_range(whole, received, received + count)
                        received += count
                    return received

                done = self._direct_get(repository, descriptor, what, into_buffer)
            if done:
                return buffer.value()
            # Not a 200: through httpx, which handles authentication, redirects and errors.
        pieces: list[bytes] = []
        self._fetch_blob(repository, descriptor, _ListSink(pieces), what, direct=False)
        return b"".join(pieces)

    def _check_blob_size(self, repository: str, descriptor: Descriptor, max_bytes: int) -> str:
        what = f"blob {descriptor.digest} of {repository}"
        if descriptor.size > max_bytes:
            raise SizeLimitError(
                f"{what} is {descriptor.size} bytes; the limit is {max_bytes} bytes",
                limit=max_bytes,
            )
        return what

    def _check_blob_received(self, received: int, descriptor: Descriptor, what: str) -> None:
        if received != descriptor.size:
            raise RegistryResponseError(
                f"{self.registry} sent {received} of the {descriptor.size} bytes of {what}",
                status_code=None,
            )

    def _check_blob_digest_of(self, actual: Digest, descriptor: Descriptor, what: str) -> None:
        if actual != descriptor.digest:
            raise DigestMismatchError(
                f"{self.registry} served {what} with bytes that hash to {actual}; refusing it",
                expected=str(descriptor.digest),
                actual=str(actual),
            )

    def _direct_get(
        self,
        repository: str,
        descriptor: Descriptor,
        what: str,
        read_body: Callable[[DirectGet, _StreamHasher], int],
    ) -> bool:
        """GET a blob with :class:`DirectGet`, *read_body* taking at most its declared size.

        Returns:
            ``True`` once the body was read and checked (size, then digest); ``False`` if the
            answer was not a 200 (an authentication challenge, a redirect, an error), which the
            caller then asks again through httpx, where they are handled.
        """
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        authorization = self._authorization(repository, frozenset({"pull"}))
        if authorization is not None:
            headers["Authorization"] = authorization
        url = httpx.URL(self._url(repository, "blobs", str(descriptor.digest)))
        size = descriptor.size
        threaded = size >= _THREADED_HASH_BYTES
        try:
            with DirectGet(url, headers, timeout=self._timeout_s) as get:
                if get.status != httpx.codes.OK:
                    return False
                length = (get.header("content-length") or "").strip()
                if length.isdigit() and int(length) > size:
                    raise SizeLimitError(
                        f"{self.registry} announces {length} bytes for {what}, which is "
                        f"{size} bytes; refusing it",
                        limit=size,
                    )
                with _StreamHasher(descriptor.digest, threaded=threaded) as hasher:
                    received = read_body(get, hasher)
                    # Rule 1: the declared size is the bound; one byte more is too many.
                    if received == size and get.readinto(memoryview(bytearray(1))):
                        raise SizeLimitError(
                            f"{self.registry} sent more than the {size} bytes of {what}; "
                            "refusing it",
                            limit=size,
                        )
                    self._check_blob_received(received, descriptor, what)
                    actual = hasher.result()
        except httpx.HTTPError as e:
            raise _transport_error(e, self.registry) from e
        self._check_blob_digest_of(actual, descriptor, what)
        return True

    def _stream_blob(
        self,
        url: str,
        repository: str,
        descriptor: Descriptor,
        what: str,
        hasher: _StreamHasher,
        sink: BlobSink,
    ) -> int:
        received = 0
        with self._open(
            "GET",
            url,
            repository,
            headers={"Accept-Encoding": "identity"},
            follow_redirects=True,
        ) as resp:
            self._check(resp, what, (200,))
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > descriptor.size:
                raise SizeLimitError(
                    f"{self.registry} announces {length} bytes for {what}, which is "
                    f"{descriptor.size} bytes; refusing it",
                    limit=descriptor.size,
                )
            for chunk in _iter_body(resp, what):
                received += len(chunk)
                if received > descriptor.size:
                    raise SizeLimitError(
                        f"{self.registry} sent more than the {descriptor.size} bytes of {what}; "
                        "refusing it",
                        limit=descriptor.size,
                    )
                hasher.update(chunk)
                sink.write(chunk)
        return received

    # -- HTTP and authentication ---------------------------------------------------------------

    def _url(self, repository: str, kind: str, rest: str) -> str:
        return f"{self._base}/v2/{repository}/{kind}/{rest}"

    @contextmanager
    def _open(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        push: bool = False,
        headers: dict[str, str] | None = None,
        content: BlobSource | None = None,
        params: dict[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> Iterator[httpx.Response]:
        actions = frozenset({"pull", "push"} if push else {"pull"})
        resp = self._send(
            method, url, repository, actions, headers or {}, content, params, follow_redirects
        )
        try:
            yield resp
        except httpx.HTTPError as e:
            raise _transport_error(e, self.registry) from e
        finally:
            resp.close()

    def _send(
        self,
        method: str,
        url: str,
        repository: str,
        actions: frozenset[str],
        headers: dict[str, str],
        content: BlobSource | None,
        params: dict[str, str] | None,
        follow_redirects: bool,
    ) -> httpx.Response:
        for attempt in range(2):
            request_headers = dict(headers)
            authorization = self._authorization(repository, actions)
            if authorization is not None:
                request_headers["Authorization"] = authorization
            body: Any = content() if callable(content) else content
            request = self._http.build_request(
                method, url, headers=request_headers, content=body, params=params
            )
            try:
                resp = self._http.send(request, stream=True, follow_redirects=follow_redirects)
            except httpx.HTTPError as e:
                raise _transport_error(e, self.registry) from e
            if resp.status_code != httpx.codes.UNAUTHORIZED:
                return resp
            challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
            resp.close()
            if attempt == 1 or not self._authenticate(
                challenges, repository, actions, sent=authorization
            ):
                break
        raise RegistryAuthError(
            self._auth_failure_message(repository, actions), status_code=httpx.codes.UNAUTHORIZED
        )

    def _authorization(self, repository: str, actions: frozenset[str]) -> str | None:
        cached = self._tokens.get(repository)
        if cached is not None and actions <= cached[1]:
            return f"Bearer {cached[0]}"
        if self._use_basic and self._credentials is not None:
            return self._credentials.basic_header()
        return None

    def _authenticate(
        self,
        challenges: tuple[Challenge, ...],
        repository: str,
        actions: frozenset[str],
        *,
        sent: str | None,
    ) -> bool:
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            self._fetch_token(bearer, repository, actions)
            return True
        if any(c.scheme == "basic" for c in challenges):
            if self._credentials is None or (sent is not None and sent.startswith("Basic ")):
                return False
            if not self._may_send_credentials(httpx.URL(self._base)):
                raise RegistryAuthError(
                    f"{self.registry} asks for a password over plain HTTP; donjon sends "
                    "credentials only over HTTPS or to loopback addresses",
                    status_code=httpx.codes.UNAUTHORIZED,
                )
            self._use_basic = True
            return True
        return False

    def _fetch_token(self, challenge: Challenge, repository: str, actions: frozenset[str]) -> None:
        realm = challenge.param("realm")
        if not realm:
            raise RegistryResponseError(
                f"{self.registry} sent a Bearer challenge without a realm",
                status_code=httpx.codes.UNAUTHORIZED,
            )
        try:
            realm_url = httpx.URL(realm)
        except httpx.InvalidURL as e:
            raise RegistryResponseError(
                f"{self.registry} sent a Bearer realm that is not a URL", status_code=401
            ) from e
        if realm_url.scheme not in ("http", "https") or not realm_url.host:
            raise RegistryResponseError(
                f"{self.registry} sent a Bearer realm that is not an http(s) URL", status_code=401
            )
        scope = f"repository:{repository}:{','.join(sorted(actions))}"
        params: list[tuple[str, str | int | float | bool | None]] = [("scope", scope)]
        service = challenge.param("service")
        if service:
            params.insert(0, ("service", service))
        headers = {}
        if self._credentials is not None:
            if not self._may_send_credentials(realm_url):
                raise RegistryAuthError(
                    f"the token service of {self.registry} is at plain-HTTP {realm_url.host}; "
                    "donjon sends credentials only over HTTPS or to loopback addresses",
                    status_code=httpx.codes.UNAUTHORIZED,
                )
            headers["Authorization"] = self._credentials.basic_header()
        what = f"token from {realm_url.host} for {repository}"
        try:
            resp = self._http.send(
                self._http.build_request("GET", realm_url, params=params, headers=headers),
                stream=True,
            )
        except httpx.HTTPError as e:
            raise _transport_error(e, realm_url.host) from e
        try:
            if resp.status_code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
                raise RegistryAuthError(
                    f"the token service of {self.registry} refused "
                    f"{'the credentials' if self._credentials else 'anonymous access'} "
                    f"for {scope}" + _credentials_hint(self._credentials),
                    status_code=resp.status_code,
                )
            self._check(resp, what, (200,))
            raw = _read_bounded(resp, _MAX_TOKEN_RESPONSE_BYTES, what)
        except httpx.HTTPError as e:
            raise _transport_error(e, realm_url.host) from e
        finally:
            resp.close()
        try:
            doc = load_json_object(raw, what=what, max_bytes=_MAX_TOKEN_RESPONSE_BYTES)
        except PackageFormatError as e:
            raise RegistryResponseError(e.message, status_code=None) from e
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token.isprintable() or " " in token:
            raise RegistryResponseError(f"{what}: the response holds no token", status_code=None)
        self._tokens[repository] = (token, actions)
        _logger.debug("got a registry token for %s (%s)", repository, ",".join(sorted(actions)))

    def _may_send_credentials(self, url: httpx.URL) -> bool:
        return url.scheme == "https" or _is_loopback_host(url.host)

    def _auth_failure_message(self, repository: str, actions: frozenset[str]) -> str:
        verb = "push to" if "push" in actions else "pull from"
        if self._credentials is None:
            return (
                f"{self.registry} needs credentials to {verb} {repository}; set "
                "DONJON_REGISTRY_USER and DONJON_REGISTRY_PASSWORD or add the registry to "
                "~/.config/donjon/registries.toml"
            )
        user = self._credentials.username
        return f"{self.registry} refused the credentials of {user!r} to {verb} {repository}"

    def _check(self, resp: httpx.Response, what: str, ok: tuple[int, ...]) -> None:
        if resp.status_code in ok:
            return
        codes, detail = _error_body(resp)
        status = resp.status_code
        suffix = f" ({detail})" if detail else ""
        if status == httpx.codes.NOT_FOUND:
            raise NotFoundError(f"{self.registry}: {what} does not exist{suffix}")
        if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
            raise RegistryAuthError(
                f"{self.registry} denied {what}{suffix}" + _credentials_hint(self._credentials),
                status_code=status,
            )
        raise RegistryResponseError(
            f"{self.registry} answered {status} to {what}{suffix}",
            status_code=status,
            error_codes=codes,
        )

    def _location(self, resp: httpx.Response, what: str) -> str:
        location = resp.headers.get("location")
        if not location or len(location) > _MAX_LOCATION_BYTES:
            raise RegistryResponseError(
                f"{self.registry} answered {what} without an upload Location",
                status_code=resp.status_code,
            )
        joined = httpx.URL(self._base).join(location)
        if joined.scheme not in ("http", "https"):
            raise RegistryResponseError(
                f"{self.registry} gave an upload Location that is not http(s)",
                status_code=resp.status_code,
            )
        return str(joined)

    def _check_blob_digest(self, resp: httpx.Response, digest: Digest) -> None:
        claimed = resp.headers.get("docker-content-digest")
        if claimed is not None and _registry_digest(claimed, self.registry) != digest:
            raise RegistryResponseError(
                f"{self.registry} stored blob {digest} but reports {claimed[:80]}",
                status_code=None,
            )


class _ListSink:
    """A sink that keeps the pieces, to join once (``BytesIO`` would copy twice)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def write(self, piece: bytes, /) -> int:
        self._pieces.append(piece)
        return len(piece)


class _StreamHasher:
    """Hash pieces in order, on a worker thread for large blobs (a context manager)."""

    def __init__(self, digest: Digest, *, threaded: bool) -> None:
        self._algorithm = digest.algorithm
        self._hash = digest.hasher()
        self._pool = ThreadPoolExecutor(1, "donjon-blob-hash") if threaded else None
        self._pending: deque[Future[None]] = deque()

    def __enter__(self) -> _StreamHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def update(self, piece: bytes) -> None:
        if self._pool is None:
            self._hash.update(piece)
            return
        # One worker runs the updates in submission order, so the digest is of the stream.
        self._submit(self._hash.update, piece)

    def update_range(self, view: memoryview, start: int, stop: int) -> None:
        """Hash ``view[start:stop]``. The slice is made where it is hashed and dropped there,
        so once :meth:`result` returns no piece of *view* is still held."""
        if self._pool is None:
            self._hash.update(view[start:stop])
            return
        self._submit(self._update_range, view, start, stop)

    def _update_range(self, view: memoryview, start: int, stop: int) -> None:
        self._hash.update(view[start:stop])

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._pool is None:  # pragma: no cover - callers check
            raise RuntimeError("not threaded")
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > _HASH_QUEUE_PIECES:
            self._pending.popleft().result()

    def result(self) -> Digest:
        while self._pending:
            self._pending.popleft().result()
        return Digest(self._algorithm, self._hash.hexdigest())


def _transport_error(e: httpx.HTTPError, where: str) -> Exception:
    if isinstance(e, httpx.TimeoutException):
        return TransportTimeoutError(f"{where} did not answer in time ({type(e).__name__})")
    if isinstance(e, httpx.TooManyRedirects):
        return RegistryResponseError(f"{where} redirected too many times", status_code=None)
    if isinstance(e, httpx.ConnectError):
        return ConnectError(f"cannot connect to registry {where}: {e}")
    return ConnectError(f"connection to registry {where} failed: {type(e).__name__}: {e}")


def _iter_body(resp: httpx.Response, what: str) -> Iterator[bytes]:
    try:
        yield from resp.iter_bytes()
    except httpx.DecodingError as e:
        raise RegistryResponseError(
            f"{what}: undecodable content encoding", status_code=None
        ) from e


def _read_bounded(resp: httpx.Response, max_bytes: int, what: str) -> bytes:
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise SizeLimitError(
            f"{what} is {length} bytes; the limit is {max_bytes} bytes", limit=max_bytes
        )
    buf = bytearray()
    for chunk in _iter_body(resp, what):
        buf += chunk
        if len(buf) > max_bytes:
            raise SizeLimitError(
                f"{what} is more than the limit of {max_bytes} bytes; refusing it", limit=max_bytes
            )
    return bytes(buf)


def _error_body(resp: httpx.Response) -> tuple[tuple[str, ...], str]:
    # An OCI error body: {"errors": [{"code": ..., "message": ...}]}. Anything else is ignored.
    try:
        raw = _read_bounded(resp, _MAX_ERROR_BODY_BYTES, "error body")
        doc = load_json_object(raw, what="error body", max_bytes=_MAX_ERROR_BODY_BYTES)
    except (SizeLimitError, PackageFormatError, RegistryResponseError, httpx.HTTPError):
        return (), ""
    errors = doc.get("errors")
    if not isinstance(errors, list):
        return (), ""
    codes: list[str] = []
    messages: list[str] = []
    for item in errors[:8]:
        if isinstance(item, dict):
            if isinstance(item.get("code"), str):
                codes.append(_printable(item["code"], 64))
            if isinstance(item.get("message"), str):
                messages.append(_printable(item["message"], 200))
    parts = [f"{c}: {m}" if m else c for c, m in zip(codes, messages, strict=False)]
    return tuple(codes), "; ".join(parts or messages)


def _printable(text: str, limit: int) -> str:
    # A registry's text goes on a terminal: no control characters, bounded length.
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _content_type(resp: httpx.Response) -> str:
    value: str = resp.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower()


def _registry_digest(text: str, registry: str) -> Digest:
    try:
        return Digest.parse(text.strip(), what=f"digest header from {registry}")
    except PackageFormatError as e:
        raise RegistryResponseError(e.message, status_code=None) from e


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _credentials_hint(credentials: Credentials | None) -> str:
    if credentials is None:
        return "; it may need credentials (DONJON_REGISTRY_USER/DONJON_REGISTRY_PASSWORD)"
    return ""


def _rechunk(pieces: Iterator[bytes] | bytes, size: int) -> Iterator[bytes]:
    if isinstance(pieces, bytes):
        view = memoryview(pieces)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def file_source(
    path: str, *, piece_bytes: int = _STREAM_PIECE_BYTES
) -> Callable[[], Iterator[bytes]]:
    """A :data:`BlobSource` that streams a file, re-opened for each attempt."""

    def factory() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while piece := f.read(piece_bytes):
                yield piece

    return factory

"""An httpx transport that reads the network in large pieces, for multi-megabyte blobs.

httpcore asks its socket for at most 64 KiB per read (``HTTP11Connection.READ_NUM_BYTES``), so a
20 MB blob costs some 320 trips through httpcore, h11 and httpx: measured on loopback, about
half of the download time. This transport hands httpcore a network backend whose reads take up
to :data:`READ_BYTES` at once; h11 accepts any amount, so the HTTP handling is unchanged.
It uses only public httpcore and httpx APIs (``ConnectionPool(network_backend=...)``,
``httpx.BaseTransport``), and changes nothing for other users of those libraries.

``RegistryClient`` uses it only for plain HTTP to a loopback registry when the caller gave no
transport: over TLS a read returns at most one TLS record (16 KiB) anyway, and elsewhere httpx's
default transport is kept so that ``HTTP(S)_PROXY`` settings are honoured.

In the same setting, large blobs are read with :class:`DirectGet`: one GET on a connection of its
own (the standard library's ``http.client``, which parses the status line and headers), whose
body goes from the socket straight into the caller's buffer (``readinto``). Through httpx the
bytes of a blob are copied four times on their way in (h11's receive buffer, the event, httpcore's
``bytes``, the caller's join), and a 20 MB package took twice as long as ``curl``; read directly,
they are copied by the kernel only.
"""

from __future__ import annotations

import http.client
import io
import ssl
import typing
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import httpcore
import httpx

__all__ = ["READ_BYTES", "DirectGet", "LargeReadTransport", "SizedBuffer"]

READ_BYTES = 4 * 1024 * 1024  # bytes asked of the socket per read; measured best of 256K, 1M, 4M

_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


class _LargeReadStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max(max_bytes, READ_BYTES), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(
            self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _mapped():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            with _mapped():
                close()


class LargeReadTransport(httpx.BaseTransport):
    """An HTTP/1.1 transport over an httpcore pool whose socket reads are large.

    Args:
        verify: as for ``httpx.Client``: ``True``, ``False``, a CA bundle path or an SSLContext.
    """

    def __init__(self, *, verify: ssl.SSLContext | str | bool = True) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            network_backend=_LargeReadBackend(),
            http1=True,
            http2=False,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.SyncByteStream):  # pragma: no cover - sync only
            raise TypeError("LargeReadTransport is synchronous")
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            response = self._pool.handle_request(core_request)
        if not isinstance(response.stream, Iterable):  # pragma: no cover - sync pool
            raise TypeError("httpcore returned an async stream")
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


@contextmanager
def _mapped() -> Iterator[None]:
    # httpx maps httpcore's exceptions to its own in a private helper; do the same here so
    # callers see only httpx.HTTPError subclasses.
    try:
        yield
    except Exception as exc:
        for core, mapped in _EXCEPTIONS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class SizedBuffer:
    """A zero-filled buffer of a fixed size whose final ``bytes`` cost no copy.

    It is an ``io.BytesIO`` over ``bytes(size)`` (``calloc``: fresh pages are not even
    written) that nothing else references, so CPython lets :meth:`view` export that very
    object for ``readinto`` without copying it, and once every view is released, :meth:`value`
    hands it over as is. Where an interpreter copies instead, the result is the same, only
    slower.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("size must not be negative")
        self._io = io.BytesIO(bytes(size))
        self.size = size

    def view(self) -> memoryview:
        """A writable view of the whole buffer; release it (``with``) before :meth:`value`."""
        return self._io.getbuffer()

    def value(self) -> bytes:
        """The buffer's bytes."""
        return self._io.getvalue()


class DirectGet:
    """One GET over a connection of its own to a plain-HTTP server, body read into a buffer.

    Sends the request and reads the status line and headers when entered; :meth:`readinto`
    then reads the body straight from the socket into the caller's memory. Errors are httpx's
    exception types, so callers map them as they map httpx's.

    Args:
        url: an ``http://`` URL.
        headers: request headers (``Host`` is added).
        timeout: seconds for the connect and for each read.
    """

    def __init__(self, url: httpx.URL, headers: Mapping[str, str], *, timeout: float) -> None:
        if url.scheme != "http" or not url.host:
            raise ValueError("DirectGet speaks plain HTTP only")
        self._url = url
        self._headers = dict(headers)
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None

    def __enter__(self) -> DirectGet:
        target = self._url.raw_path.decode("ascii")
        self._conn = http.client.HTTPConnection(
            self._url.host, self._url.port or 80, timeout=self._timeout
        )
        try:
            with _mapped_stdlib(connecting=True):
                self._conn.request("GET", target, headers=self._headers)
            with _mapped_stdlib(connecting=False):
                self._response = self._conn.getresponse()
        except BaseException:
            self._conn.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()

    @property
    def status(self) -> int:
        """The response status code."""
        return self._answer().status

    def header(self, name: str) -> str | None:
        """A response header (the first, if repeated), or ``None``."""
        value = self._answer().getheader(name)
        return value if isinstance(value, str) else None

    def readinto(self, view: memoryview) -> int:
        """Read the next body bytes into *view*; 0 at the end of the body.

        Raises:
            httpx.RemoteProtocolError: the body ended before its ``Content-Length``, or is
                malformed (chunked encoding).
            httpx.ReadTimeout, httpx.ReadError: the network.
        """
        with _mapped_stdlib(connecting=False):
            return self._answer().readinto(view)

    def _answer(self) -> http.client.HTTPResponse:
        if self._response is None:
            raise RuntimeError("DirectGet is used outside its with block")
        return self._response


@contextmanager
def _mapped_stdlib(*, connecting: bool) -> Iterator[None]:
    # http.client and socket errors, as the httpx exceptions the caller already handles.
    try:
        yield
    except TimeoutError as exc:
        mapped: type[httpx.HTTPError] = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
        raise mapped(str(exc) or "timed out") from exc
    except http.client.HTTPException as exc:
        raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}"[:200]) from exc
    except OSError as exc:
        mapped = httpx.ConnectError if connecting else httpx.ReadError
        raise mapped(str(exc)) from exc

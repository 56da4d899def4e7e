"""TLS 1.3 from the client to the keep runtime, carried over the keep manager's WebSocket relay.

The relay is untrusted: it sees only TLS records. TLS runs in memory (``ssl.MemoryBIO``) on the
client; each chunk of ciphertext travels as one binary WebSocket message.
"""

from __future__ import annotations

import ssl
from types import TracebackType

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from donjon.errors import (
    ChainError,
    ConnectError,
    RemoteProtocolError,
    TransportError,
    TransportTimeoutError,
)

RECV_TIMEOUT_S = 120.0
"""Longest silence from the Keep before the client gives up (seconds)."""
MAX_WS_MESSAGE_BYTES = 1024 * 1024
"""Largest relay message accepted (bytes): the relay forwards at most 64 KiB chunks."""
_SEND_CHUNK_BYTES = 64 * 1024


class ChannelError(TransportError):
    """The attested channel broke: a TLS failure or the relay closed."""


class KeepChannel:
    """A TLS client session to a Keep through a relay WebSocket.

    Args:
        url: ``ws://`` or ``wss://`` URL of the relay endpoint.
        token: the keep manager's bearer token.
        context: the client ``SSLContext`` (its verification mode decides what the handshake
            checks; the caller verifies the Keep's attestation afterwards).
    """

    def __init__(self, url: str, *, token: str, context: ssl.SSLContext) -> None:
        try:
            self._ws: ClientConnection = connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=MAX_WS_MESSAGE_BYTES,
                open_timeout=30,
                close_timeout=2,
            )
        except InvalidStatus as e:
            raise ConnectError(
                f"the keep manager refused the relay (HTTP {e.response.status_code})"
            ) from e
        except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as e:
            raise ConnectError(f"cannot open the relay at {url}: {e}") from e
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=False)
        self._eof = False

    def __enter__(self) -> KeepChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def handshake(self) -> bytes:
        """Run the TLS handshake; return the Keep's certificate (DER).

        Raises:
            ChainError: the certificate does not chain to the trusted CA (Steward mode).
            ChannelError: the handshake failed (a tampering relay, a peer that is not a Keep).
        """
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLCertVerificationError as e:
                # Only with a trusted CA (Steward): the Keep did not prove itself, whoever it is.
                raise ChainError(
                    f"the Keep's certificate is not issued by the Steward CA you trust (--ca): "
                    f"{e.verify_message}; the host may be substituting a Keep of its own"
                ) from e
            except ssl.SSLError as e:
                raise ChannelError(f"TLS handshake with the Keep failed: {e.reason or e}") from e
        self._flush()
        cert = self._tls.getpeercert(binary_form=True)
        if not cert:
            raise ChannelError("the Keep presented no certificate")
        if self._tls.version() != "TLSv1.3":
            raise ChannelError(f"the Keep negotiated {self._tls.version()}; TLS 1.3 is required")
        return cert

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._tls.write(view[:_SEND_CHUNK_BYTES])
            view = view[n:]
            self._flush()

    def recv(self) -> bytes:
        """Some plaintext from the Keep; b"" at the end of the session."""
        while True:
            try:
                return self._tls.read(64 * 1024)
            except ssl.SSLWantReadError:
                if self._eof:
                    return b""
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as e:
                raise ChannelError(f"the TLS session with the Keep broke: {e.reason or e}") from e

    def close(self) -> None:
        try:
            self._ws.close()
        except (ConnectionClosed, OSError):
            pass

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            try:
                self._ws.send(data)
            except (ConnectionClosed, OSError) as e:
                raise ChannelError(f"the relay closed while sending: {e}") from e

    def _fill(self) -> None:
        try:
            message = self._ws.recv(timeout=RECV_TIMEOUT_S)
        except TimeoutError as e:
            raise TransportTimeoutError(
                f"the Keep sent nothing for {RECV_TIMEOUT_S:.0f} s; giving up"
            ) from e
        except ConnectionClosed:
            self._eof = True
            self._in.write_eof()
            return
        if isinstance(message, str):
            raise RemoteProtocolError("the relay sent a text message; it must carry bytes only")
        self._in.write(message)

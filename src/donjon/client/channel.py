"""TLS 1.3 from the client to the keep runtime, carried over the keep manager's WebSocket relay.

The relay is untrusted: it sees only TLS records. TLS runs in memory (``ssl.MemoryBIO``) on the
client; each chunk of ciphertext travels as one binary WebSocket message.

One thread may :meth:`KeepChannel.send` (e.g. the caller's stdin) while another
is in :meth:`KeepChannel.recv`: the TLS object is used under a lock, and ciphertext leaves in the
order TLS produced it.

When the keep manager refuses the relay, its reason reaches the error message: the HTTP status
and the ``reason`` of its CBOR error body (or a WebSocket close code and reason, 4401/4404/4410/
4503, from a manager that closes instead), cut short and stripped to printable text, because the
manager is untrusted.
"""

from __future__ import annotations

import ssl
import threading
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from donjon._closing import Closing
from donjon.errors import (
    ChainError,
    ConnectError,
    DecodeError,
    RemoteProtocolError,
    TransportError,
    TransportTimeoutError,
)

RECV_TIMEOUT_S = 120.0
"""Longest silence from the Keep before the client gives up (seconds)."""
MAX_WS_MESSAGE_BYTES = 1024 * 1024
"""Largest relay message accepted (bytes): the relay forwards at most 64 KiB chunks."""
_SEND_CHUNK_BYTES = 64 * 1024
MAX_REFUSAL_BODY_BYTES = 4096
"""Most of a relay refusal's body read for its reason (bytes)."""
MAX_REASON_CHARS = 300
CLOSE_CODES = {
    4401: "the keep manager refused the token",
    4404: "no such Keep for this token",
    4410: "the Keep has finished",
    4503: "the Keep is not listening",
}
"""The keep manager's relay close codes (docs/protocol.md, "The relay")."""


class ChannelError(TransportError):
    """The attested channel broke: a TLS failure or the relay closed."""


class RelayRefusedError(ConnectError):
    """The keep manager refused to open the relay.

    Attributes:
        status_code: its HTTP status (401 token, 404 no such Keep, 410 finished, 503 not
            listening; 403 from a manager that closes before accepting).
    """

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class KeepChannel(Closing):
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
            status = e.response.status_code
            why = refusal_reason(e.response.body)
            raise RelayRefusedError(
                f"the keep manager refused the relay (HTTP {status}"
                + (f": {why})" if why else ")"),
                status_code=status,
            ) from e
        except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as e:
            raise ConnectError(f"cannot open the relay at {url}: {e}") from e
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=False)
        self._tls_lock = threading.Lock()  # the TLS object and its BIOs
        self._send_lock = threading.Lock()  # taken first: keeps ciphertext in order
        self._eof = False
        self.closed_by: str | None = None
        """How the relay closed, if it said (``4410: the Keep has finished``)."""

    def handshake(self) -> bytes:
        """Run the TLS handshake; return the Keep's certificate (DER).

        Raises:
            ChainError: the certificate does not chain to the trusted CA (Steward mode).
            ChannelError: the handshake failed (a tampering relay, a peer that is not a Keep).
        """
        while True:
            try:
                with self._tls_lock:
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
                closed = f" (the relay closed: {self.closed_by})" if self.closed_by else ""
                raise ChannelError(
                    f"TLS handshake with the Keep failed: {e.reason or e}{closed}"
                ) from e
        self._flush()
        cert = self._tls.getpeercert(binary_form=True)
        if not cert:
            raise ChannelError("the Keep presented no certificate")
        if self._tls.version() != "TLSv1.3":
            raise ChannelError(f"the Keep negotiated {self._tls.version()}; TLS 1.3 is required")
        return cert

    def send(self, data: bytes) -> None:
        """Send plaintext to the Keep (safe while another thread is in :meth:`recv`).

        Raises:
            ChannelError: the relay closed or TLS failed.
        """
        view = memoryview(data)
        while view:
            with self._send_lock:
                with self._tls_lock:
                    try:
                        n = self._tls.write(view[:_SEND_CHUNK_BYTES])
                    except ssl.SSLError as e:
                        raise ChannelError(f"the TLS session with the Keep broke: {e}") from e
                    ciphertext = self._out.read()
                self._ws_send(ciphertext)
            view = view[n:]

    def recv(self) -> bytes:
        """Some plaintext from the Keep; b"" at the end of the session."""
        while True:
            try:
                with self._tls_lock:
                    data = self._tls.read(64 * 1024)
                    answer = self._out.pending > 0  # e.g. a TLS KeyUpdate to acknowledge
                if answer:
                    self._flush()
                return data
            except ssl.SSLWantReadError:
                if self._eof:
                    return b""
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as e:
                closed = f" (the relay closed: {self.closed_by})" if self.closed_by else ""
                raise ChannelError(
                    f"the TLS session with the Keep broke: {e.reason or e}{closed}"
                ) from e

    def close(self) -> None:
        try:
            self._ws.close()
        except (ConnectionClosed, OSError):
            pass

    def _flush(self) -> None:
        with self._send_lock:
            with self._tls_lock:
                data = self._out.read()
            self._ws_send(data)

    def _ws_send(self, data: bytes) -> None:
        if not data:
            return
        try:
            self._ws.send(data)
        except ConnectionClosed as e:
            # The close reason is the untrusted relay's text: only a known code, cleaned, is told.
            self.closed_by = _close_reason(e)
            why = f" ({self.closed_by})" if self.closed_by else ""
            raise ChannelError(f"the relay closed while sending{why}") from e
        except OSError as e:
            raise ChannelError(f"the relay's connection failed while sending: {e}") from e

    def _fill(self) -> None:
        try:
            message = self._ws.recv(timeout=RECV_TIMEOUT_S)
        except TimeoutError as e:
            raise TransportTimeoutError(
                f"the Keep sent nothing for {RECV_TIMEOUT_S:.0f} s; giving up"
            ) from e
        except ConnectionClosed as e:
            self.closed_by = _close_reason(e)
            self._eof = True
            with self._tls_lock:
                self._in.write_eof()
            return
        if isinstance(message, str):
            raise RemoteProtocolError("the relay sent a text message; it must carry bytes only")
        with self._tls_lock:
            self._in.write(message)


def refusal_reason(body: bytes | None) -> str | None:
    """The ``reason`` in a keep manager's CBOR refusal body, made safe to print; else None."""
    if not body or len(body) > MAX_REFUSAL_BODY_BYTES:
        return None
    from donjon.wire.cbor import decode

    try:
        answer: Any = decode(body, what="relay refusal", max_bytes=MAX_REFUSAL_BODY_BYTES)
    except DecodeError:
        return None
    reason = answer.get("reason") if isinstance(answer, dict) else None
    if not isinstance(reason, str):
        return None
    return _printable(reason) or None


def _close_reason(e: ConnectionClosed) -> str | None:
    """``4410: the Keep has finished`` for a close frame with one of the manager's codes."""
    frame = e.rcvd
    if frame is None or frame.code not in CLOSE_CODES:
        return None
    return f"{frame.code}: {_printable(frame.reason) or CLOSE_CODES[frame.code]}"


def _printable(text: str) -> str:
    kept = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in text)
    return " ".join(kept.split())[:MAX_REASON_CHARS]

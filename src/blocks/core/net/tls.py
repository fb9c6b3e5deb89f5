"""TLS contexts for ``TcpTransport``, built from PEM bytes or files.

Theory of operation: ``TcpTransport`` takes standard ``ssl.SSLContext`` objects, one for its
listener (``tls=``) and one for its dials (``tls_ca=``), so any setting the ``ssl`` module
offers stays available. The two functions below build the usual pair from PEM material, given
as bytes (the content) or as a path, the same convention as ``blocks.core.rpc.read_pem``:

* ``server_tls_context(cert, key)``: the listener presents ``cert`` (a chain) and proves it
  holds ``key``; with ``client_ca`` it also requires a client certificate signed by that CA
  (mutual TLS).
* ``client_tls_context(ca)``: the dialer accepts only a listener whose certificate is signed by
  ``ca`` and names the host it dialed (or the ``tls_server_name`` the transport is given);
  ``client_cert`` is the ``(chain, key)`` pair for listeners that require one.

Both require TLS 1.2 or later. Python's ``ssl`` module loads a certificate chain only from
files, so PEM bytes for ``cert`` and ``key`` are written to a private temporary directory
(mode 0700), loaded, and deleted before the function returns. Unreadable, malformed or
mismatched material raises ``InvalidArgument``; nothing is half-configured.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from blocks.core.errors import InvalidArgument
from blocks.core.rpc import PemSource, read_pem

__all__ = ["check_tls_context", "client_tls_context", "server_tls_context"]

TLS_VERSION_MIN = ssl.TLSVersion.TLSv1_2


def server_tls_context(
    cert: PemSource, key: PemSource, client_ca: PemSource | None = None
) -> ssl.SSLContext:
    """A listener's context: present ``cert``/``key``; with ``client_ca``, require clients'
    certificates signed by it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSION_MIN
    _load_chain(context, cert, key)
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(
    ca: PemSource, client_cert: tuple[PemSource, PemSource] | None = None
) -> ssl.SSLContext:
    """A dialer's context: trust only listeners whose certificate ``ca`` signed, checking the
    name; present ``client_cert`` (chain, key) when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.minimum_version = TLS_VERSION_MIN
    _load_ca(context, ca)
    if client_cert is not None:
        _load_chain(context, client_cert[0], client_cert[1])
    return context


def check_tls_context(context: ssl.SSLContext, *, server_side: bool) -> ssl.SSLContext:
    """Return ``context`` if it can serve the side named; ``InvalidArgument`` otherwise."""
    if not isinstance(context, ssl.SSLContext):
        raise InvalidArgument(f"expected an ssl.SSLContext, got {type(context).__name__}")
    wrong = ssl.PROTOCOL_TLS_CLIENT if server_side else ssl.PROTOCOL_TLS_SERVER
    if context.protocol == wrong:
        side = "listener (tls=)" if server_side else "dialer (tls_ca=)"
        raise InvalidArgument(f"the {side} needs a context made for that side, got {wrong.name}")
    return context


def _load_ca(context: ssl.SSLContext, ca: PemSource) -> None:
    try:
        context.load_verify_locations(cadata=read_pem(ca).decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"cannot load the TLS CA certificate: {error}") from None


def _load_chain(context: ssl.SSLContext, cert: PemSource, key: PemSource) -> None:
    cert_pem, key_pem = read_pem(cert), read_pem(key)
    with tempfile.TemporaryDirectory(prefix="blocks-tls-") as directory:
        cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as error:
            raise InvalidArgument(f"cannot load the TLS certificate and key: {error}") from None

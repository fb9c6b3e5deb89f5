"""The network layer: ``TcpTransport``, the ``Transport`` protocol between processes over TCP.

Theory of operation: the protocol itself (``blocks.core.transport``: request/reply, one-way
messages, wire errors, the frame codec) sits one floor down, beside the in-memory network the
simulations use; this package is its socket implementation, one module per concern:

* ``transport``: ``TcpTransport``: the listener, the dials and their backoff, the bookkeeping
  that closes everything;
* ``connection``: the two ends of a connection (the dialer matching replies by id, the listener
  answering requests);
* ``framing``: ``FramedConnection``, what both ends share: state, decoding, ``GOAWAY`` on bad
  input, the budget of bytes in progress, coalesced writes, flow control;
* ``limits``: ``TcpLimits`` (what strangers can make a listener hold) and the connection states;
* ``tls``: ``ssl.SSLContext`` builders from PEM.

Code outside this package imports what is below from ``blocks.core.net`` and never one of its
modules (``tests/test_house.py`` checks it), so the modules can be rearranged freely.
"""

from __future__ import annotations

from blocks.core.net.limits import TcpLimits
from blocks.core.net.tls import check_tls_context, client_tls_context, server_tls_context
from blocks.core.net.transport import Address, TcpTransport

__all__ = [
    "Address",
    "TcpLimits",
    "TcpTransport",
    "check_tls_context",
    "client_tls_context",
    "server_tls_context",
]

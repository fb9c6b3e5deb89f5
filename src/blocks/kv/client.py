"""The kv client: ``await connect([...])`` for processes, ``cluster.client()`` in-process.

Theory of operation. A ``KVClient`` talks to nodes over any ``Transport`` with the requests in
``blocks.kv.cluster.client_wire``. It learns the members (names, data-path addresses, which are healthy
as the answering node sees them, N and the ring's virtual nodes) from any node, builds the
same ``HashRing`` the nodes use, and sends each request to the first healthy home node of the
key, so a put usually costs one hop to its coordinator plus the replication. When a node is
unreachable (``Unavailable``) it tries the key's next node and puts the unreachable one last
for ``AVOID_S``; its view of the members is refreshed every ``REFRESH_INTERVAL_S``. It never
retries a ``Timeout`` (the write may have landed). A node whose disk refused the request
(``StorageError``, ``StorageFull``) is tried like an unreachable one; when the last node tried
refused that way, its error is raised as it is. A connection lost after a put was sent is
also ``Unavailable`` and is retried, so a put is at least once: when the first coordinator
had already replicated it, the key shows the value twice, as two siblings, until a write
with a read's context resolves them. With ``balance="random"`` each request goes to a random
healthy home node instead, which spreads coordination (and makes concurrent writes through
different coordinators more likely).

Versions: ``get`` returns a ``Versioned`` whose ``siblings`` are all concurrent live values
(one when there is no conflict) and whose ``context`` is an opaque token. ``put``/``delete``
with that context supersede exactly what the read saw; without one they supersede whatever
the coordinating node holds. Concurrent writes through different coordinators still become
siblings, which a write with a context covering them resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Iterable
from typing import Any, Literal

from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    PeerError,
    StorageError,
    Unauthenticated,
    Unavailable,
)
from blocks.core.hashing import HashRing
from blocks.core.net import TcpTransport, check_tls_context, client_tls_context
from blocks.core.rpc import PemSource
from blocks.core.transport import (
    FrameDecoder,
    FrameKind,
    Transport,
    encode_frame,
    error_from_wire,
)
from blocks.kv.cluster.client_wire import (
    KEYS_LIMIT_MAX,
    PutResult,
    check_timeout_s,
    parse_address,
    parse_put_reply,
)
from blocks.kv.cluster.quorum import Placements
from blocks.kv.limits import VALUE_BYTES_MAX_DEFAULT, check_key, check_value
from blocks.kv.versioned import Versioned

__all__ = ["KVClient", "Versioned", "connect", "parse_address", "probe_name"]

DEFAULT_TIMEOUT_S = 5.0
REFRESH_INTERVAL_S = 2.0
"""How stale the client's view of the members may get before a request refreshes it."""
ATTEMPTS_MAX = 4
"""Nodes one request tries before giving up with ``Unavailable``."""
AVOID_S = 2.0
"""How long a node that refused a connection is tried only after the others."""


class KVClient:
    """A client over ``transport``; ``seeds`` are node names that transport can reach."""

    def __init__(
        self,
        transport: Transport,
        seeds: Iterable[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        value_bytes_max: int = VALUE_BYTES_MAX_DEFAULT,
        owns_transport: bool = False,
        rng: random.Random | None = None,
        balance: Literal["first", "random"] = "first",
    ) -> None:
        self.transport = transport
        self._seeds = list(seeds)
        if not self._seeds:
            raise InvalidArgument("a client needs at least one node to ask")
        self.timeout_s = check_timeout_s(timeout_s) or DEFAULT_TIMEOUT_S
        self.value_bytes_max = value_bytes_max
        self._owns_transport = owns_transport
        if balance not in ("first", "random"):
            raise InvalidArgument("balance must be 'first' or 'random'")
        self.balance = balance
        self._rng = rng or random.Random()
        self._ring = HashRing()
        self._placements = Placements()  # preference lists per key, while the ring stays
        self._healthy: set[str] = set()
        self._addresses: dict[str, str] = {}
        self._avoid_until: dict[str, float] = {}  # node -> loop time: unreachable lately
        self._refreshed_at = 0.0
        self.replicas = 1

    # -- membership ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask one reachable node for the members; ``Unavailable`` if none answers."""
        candidates = [*self._ring.nodes, *self._seeds]
        self._rng.shuffle(candidates)
        last_error: Exception | None = None
        for node in dict.fromkeys(candidates):
            try:
                reply = await self.transport.request(node, ["members"], self.timeout_s)
                self._adopt(reply)
                return
            except BlocksError as error:  # unreachable, or answering wrongly: try the next
                last_error = error
        raise Unavailable(f"no kv node answered: {last_error}")

    def _adopt(self, reply: Any) -> None:
        if not isinstance(reply, dict) or not isinstance(reply.get("nodes"), list):
            raise PeerError("members reply must be a dict with nodes")
        names, healthy = [], set()
        for entry in reply["nodes"]:
            if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str):
                raise PeerError("member entry must be [name, address, healthy]")
            name, address, is_healthy = entry
            names.append(name)
            if is_healthy:
                healthy.add(name)
            known = self._addresses.get(name)
            if address and known != address and isinstance(self.transport, TcpTransport):
                self.transport.add_peer(name, parse_address(address))
                self._addresses[name] = address
        vnodes, replicas = reply.get("vnodes"), reply.get("replicas")
        if type(vnodes) is not int or type(replicas) is not int or not names:
            raise PeerError("members reply needs nodes, vnodes and replicas")
        self._ring = HashRing(names, vnodes=vnodes)
        self._healthy = healthy
        self._refreshed_at = asyncio.get_running_loop().time()
        self.replicas = replicas

    def members(self) -> list[str]:
        return self._ring.nodes

    def _route(self, key: bytes, now: float) -> list[str]:
        """The nodes to try for ``key``, in order: its healthy home nodes not avoided lately
        (shuffled with ``balance="random"``), then the rest of its preference list."""
        ring = self._ring
        if not len(ring):
            return list(self._seeds)
        order = self._placements.of(ring, key, len(ring))
        healthy, avoid_until = self._healthy, self._avoid_until
        if avoid_until and max(avoid_until.values()) <= now:
            avoid_until.clear()  # every node avoided lately may be tried in order again
        if (
            self.balance == "first"
            and not avoid_until
            and healthy.issuperset(order[: self.replicas])
        ):
            return order  # the usual case: the key's home nodes, all healthy, in ring order
        healthy_home = [
            n for n in order[: self.replicas] if n in healthy and avoid_until.get(n, 0.0) <= now
        ]
        if self.balance == "random":
            self._rng.shuffle(healthy_home)
        return healthy_home + [n for n in order if n not in healthy_home]

    async def _call(self, key: bytes, request: list[Any], timeout_s: float | None) -> Any:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not len(self._ring) or now - self._refreshed_at > REFRESH_INTERVAL_S:
            with contextlib.suppress(Unavailable):
                await self.refresh()
        deadline = timeout_s or self.timeout_s
        last_error: Exception | None = None
        for node in self._route(key, now)[:ATTEMPTS_MAX]:
            try:
                return await self.transport.request(node, request, deadline)
            except Unavailable as error:
                last_error = error
                self._avoid_until[node] = loop.time() + AVOID_S
        with contextlib.suppress(Unavailable):
            await self.refresh()
        if isinstance(last_error, StorageError):
            raise last_error
        raise Unavailable(f"no replica of the key answered: {last_error}")

    # -- operations --------------------------------------------------------------------------

    async def put(
        self,
        key: bytes | str,
        value: bytes,
        context: bytes | None = None,
        *,
        w: int | None = None,
        timeout_s: float | None = None,
    ) -> Versioned:
        """Write ``value``; returns the object as stored by the coordinator."""
        if value is None:
            raise InvalidArgument("put needs a value; use delete to remove a key")
        encoded, request = self._put_request(key, value, context, w, timeout_s)
        reply = await self._call(encoded, request, timeout_s)
        if type(reply) is not list or len(reply) != 2 or type(reply[1]) is not str:
            return Versioned.of(parse_put_reply(reply).obj)  # raises PeerError if malformed
        return Versioned.from_wire(reply[0])

    async def delete(
        self,
        key: bytes | str,
        context: bytes | None = None,
        *,
        w: int | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Delete ``key`` (a tombstone that supersedes what ``context`` saw)."""
        await self.write(key, None, context, w=w, timeout_s=timeout_s)

    async def write(
        self,
        key: bytes | str,
        value: bytes | None,
        context: bytes | None = None,
        *,
        w: int | None = None,
        timeout_s: float | None = None,
    ) -> PutResult:
        """The raw write under ``put``/``delete`` (``None`` deletes): returns the object as
        the coordinator stored it and the coordinator's name, so ``result.dot`` names the new
        version."""
        encoded, request = self._put_request(key, value, context, w, timeout_s)
        return parse_put_reply(await self._call(encoded, request, timeout_s))

    def _put_request(
        self,
        key: bytes | str,
        value: bytes | None,
        context: bytes | None,
        w: int | None,
        timeout_s: float | None,
    ) -> tuple[bytes, list[Any]]:
        if value is not None:
            value = check_value(value, self.value_bytes_max)
        encoded = check_key(key)
        if context is not None and not isinstance(context, bytes):
            raise InvalidArgument("context must be the bytes a read returned")
        return encoded, ["put", encoded, value, context, w, check_timeout_s(timeout_s), 0]

    async def get(
        self, key: bytes | str, *, r: int | None = None, timeout_s: float | None = None
    ) -> Versioned:
        """Read ``key`` from R replicas; ``value`` None if absent or deleted."""
        encoded = check_key(key)
        reply = await self._call(
            encoded, ["get", encoded, r, check_timeout_s(timeout_s)], timeout_s
        )
        return Versioned.of(None) if reply is None else Versioned.from_wire(reply)

    async def keys(self, limit: int = KEYS_LIMIT_MAX) -> list[bytes]:
        """Every live key: the union of what each node holds live, each confirmed by a read.

        A key live in the cluster is live on at least one replica (a quorum read merges
        replicas' copies), so leaving out each node's tombstones loses nothing; the read
        drops keys a replica holds live only because it missed a delete."""
        await self.refresh()
        candidates: set[bytes] = set()
        for node in self._ring.nodes:
            try:
                held = await self.transport.request(node, ["keys", limit], self.timeout_s)
            except Unavailable:
                continue
            if not isinstance(held, list):
                raise PeerError("keys reply must be a list")
            candidates.update(k for k in held if isinstance(k, bytes))
        live = []
        for key in sorted(candidates):
            if (await self.get(key)).value is not None:
                live.append(key)
        return live

    async def status(self) -> list[dict[str, Any]]:
        """Every member's own status report (unreachable ones say so)."""
        await self.refresh()
        reports: list[dict[str, Any]] = []
        for node in self._ring.nodes:
            try:
                reports.append(await self.transport.request(node, ["status"], self.timeout_s))
            except Unavailable as error:
                reports.append({"node": node, "error": str(error)})
        return reports

    async def close(self) -> None:
        if self._owns_transport:
            await self.transport.close()

    async def __aenter__(self) -> KVClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def connect(
    addresses: Iterable[str] | str,
    *,
    token: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    value_bytes_max: int = VALUE_BYTES_MAX_DEFAULT,
    tls_ca: PemSource | ssl.SSLContext | None = None,
    tls_server_name: str | None = None,
) -> KVClient:
    """A client for the cluster that any of ``addresses`` (``host:port``) belongs to.

    ``tls_ca`` (PEM bytes, a path, or a ready client ``ssl.SSLContext``, say with a client
    certificate) makes every connection TLS, accepting only nodes whose certificate that CA
    signed for the host dialed (or ``tls_server_name``); ``InvalidArgument`` if it cannot be
    loaded. A node that speaks TLS refuses a client that does not, and the other way round.
    """
    if isinstance(addresses, str):
        addresses = addresses.split(",")
    targets = [parse_address(a.strip()) for a in addresses if a.strip()]
    if not targets:
        raise InvalidArgument("connect needs at least one HOST:PORT")
    tls = _client_tls(tls_ca, tls_server_name)
    name = f"client-{random.getrandbits(48):012x}"
    seeds: dict[str, tuple[str, int]] = {}
    last_error: Exception | None = None
    for target in targets:
        try:
            probe = probe_name(target, name, token, timeout_s, tls=tls, server_name=tls_server_name)
            seeds[await probe] = target
        except (BlocksError, OSError, TimeoutError) as error:
            last_error = error
    if not seeds:
        if isinstance(last_error, Unauthenticated):
            raise last_error
        raise Unavailable(f"no kv node answered at {targets}: {last_error}")
    transport = TcpTransport(
        name, listen=None, peers=seeds, token=token, tls_ca=tls, tls_server_name=tls_server_name
    )
    client = KVClient(
        transport, seeds, timeout_s=timeout_s, value_bytes_max=value_bytes_max, owns_transport=True
    )
    try:
        await client.refresh()
    except BaseException:
        await transport.close()
        raise
    return client


def _client_tls(
    tls_ca: PemSource | ssl.SSLContext | None, server_name: str | None
) -> ssl.SSLContext | None:
    if tls_ca is None:
        if server_name is not None:
            raise InvalidArgument("tls_server_name needs tls_ca")
        return None
    if isinstance(tls_ca, ssl.SSLContext):
        return check_tls_context(tls_ca, server_side=False)
    return client_tls_context(tls_ca)


async def probe_name(
    address: tuple[str, int],
    client_name: str,
    token: str | None,
    timeout_s: float,
    *,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> str:
    """The node name a data-path listener answers with (its ``WELCOME``), so a client that
    knows only addresses can greet nodes by name. With ``tls`` the probe is a TLS connection
    that checks the listener's certificate for ``server_name`` (default: the host)."""
    tls_options: dict[str, Any] = {}
    if tls is not None:
        tls_options = {"ssl": tls, "server_hostname": server_name or address[0]}
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(*address, **tls_options)
        try:
            writer.write(encode_frame([FrameKind.HELLO, client_name, token]))
            decoder = FrameDecoder()
            while True:
                data = await reader.read(4096)
                if not data:
                    raise Unavailable(f"{address[0]}:{address[1]} closed the connection")
                for frame in decoder.feed(data):
                    if frame[0] is FrameKind.WELCOME and isinstance(frame[1], str):
                        return frame[1]
                    if frame[0] is FrameKind.GOAWAY:
                        raise error_from_wire(frame[1])
                    raise PeerError(f"unexpected {frame[0]!r} before WELCOME")
        finally:
            writer.close()

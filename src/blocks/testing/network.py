"""Network faults between the processes of a ``ProcessCluster``: one proxy per directed link.

``Network(cluster, role)`` puts a ``LinkProxy`` on every link ``a -> b`` (``a`` dialing
``b``'s ``role`` port) and tells the cluster that ``a`` dials the proxy instead. Build it
before the nodes start: their peer lists are fixed on their command lines.

Because each direction of each pair has its own proxy, a fault can hit one pair, one way:
``isolate(a, one_way=True)`` stops what ``a`` sends (on its outbound links and as replies on
its peers' links to it) while ``a`` still hears the others.

A block whose nodes learn peers' addresses from gossip and then dial those (kv advertises its
``--listen`` address) bypasses the proxies; such a block needs an advertised-address option
before network faults can reach it.
"""

from __future__ import annotations

from collections.abc import Iterable

from blocks.testing.process import ProcessCluster
from blocks.testing.proxy import Direction, LinkProxy

__all__ = ["Network"]


class Network:
    """Proxies for ``cluster``'s links on port ``role``; ``close()`` (or ``with``) stops them."""

    def __init__(self, cluster: ProcessCluster, role: str) -> None:
        self.cluster = cluster
        self.role = role
        self.links: dict[tuple[str, str], LinkProxy] = {}
        for source in cluster.names:
            for target in cluster.names:
                if source != target:
                    proxy = LinkProxy(cluster.address(target, role), host=cluster.info(target).host)
                    self.links[source, target] = proxy
                    cluster.dial[source][target][role] = proxy.address

    def cut(self, source: str, target: str, *, one_way: bool = False) -> None:
        """``source`` can no longer reach ``target`` (and, unless ``one_way``, nor back).

        One way drops ``source``'s bytes to ``target`` on both links between them, so a
        reply from ``source`` on ``target``'s connection is lost too."""
        self.links[source, target].drop(Direction.UP)
        self.links[target, source].drop(Direction.DOWN)
        if not one_way:
            self.links[target, source].drop(Direction.UP)
            self.links[source, target].drop(Direction.DOWN)

    def isolate(self, node: str, *, one_way: bool = False) -> None:
        """Cut ``node`` off from every other node (only its outbound bytes if ``one_way``)."""
        for other in self.cluster.names:
            if other != node:
                self.cut(node, other, one_way=one_way)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between nodes of different groups, both ways."""
        membership = {node: index for index, group in enumerate(groups) for node in group}
        for (source, target), _ in self.links.items():
            if membership.get(source) != membership.get(target):
                self.cut(source, target, one_way=True)

    def delay(self, node: str, seconds: float) -> None:
        """Delay every byte to and from ``node`` by ``seconds``."""
        for (source, target), proxy in self.links.items():
            if node in (source, target):
                proxy.delay(seconds)

    def bytes_dropped(self) -> int:
        """Bytes the proxies have thrown away so far (a check that a fault hit traffic)."""
        return sum(proxy.bytes_dropped for proxy in self.links.values())

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()

    def close(self) -> None:
        for proxy in self.links.values():
            proxy.close()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

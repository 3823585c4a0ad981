"""Several "hosts" on one machine for tests: network namespaces joined by a bridge, each with its own address."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

#: Where the test networks' subnets are drawn from (a /24 each), away from common LAN and container ranges.
SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")


class NamespacesUnavailableError(RuntimeError):
    """This machine (or this user) cannot create network namespaces."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip`` with ``args``; raise naming the command and its error when it fails and ``check`` is set."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class Host:
    """One namespace on the test network: its name, its address and the interface that joins it."""

    namespace: str
    address: str
    interface: str

    def argv(self, *command: str) -> list[str]:
        """Return ``command`` as run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *command]

    def cut(self) -> None:
        """Take the host's link down: its packets go nowhere and nobody reaches it, as when a host is lost."""
        ip("-n", self.namespace, "link", "set", self.interface, "down")

    def reconnect(self) -> None:
        """Bring the host's link back up; its open connections carry on where they stalled."""
        ip("-n", self.namespace, "link", "set", self.interface, "up")


def _free_subnet() -> ipaddress.IPv4Network:
    """Return a /24 of ``SUBNETS`` that no route of this machine uses."""
    routes = ip("-4", "route", "show", "table", "all").stdout
    used = [ipaddress.IPv4Network(word, strict=False) for word in routes.split() if "/" in word and word[0].isdigit()]
    candidates = list(SUBNETS.subnets(new_prefix=24))
    for _ in range(50):  # bounded: a random /24 of 256, skipping those in use
        subnet = candidates[secrets.randbelow(len(candidates))]
        if not any(subnet.overlaps(route) for route in used):
            return subnet
    raise NamespacesUnavailableError(f"no free /24 left in {SUBNETS}")


@contextlib.contextmanager
def network(names: Sequence[str]) -> Iterator[dict[str, Host]]:
    """Create one namespace per name, joined by a bridge in a switch namespace; tear everything down at the end.

    This process (the test) joins the network too, as the host ``"test"``, through a link of its own: it talks
    only to the namespaces created here. Each host reaches every other by its address.
    """
    if os.geteuid() != 0:
        raise NamespacesUnavailableError("creating network namespaces needs root")
    token = secrets.token_hex(2)
    switch = f"t{token}sw"
    subnet = _free_subnet()
    addresses = iter(subnet.hosts())
    created: list[str] = []
    root_link = f"t{token}test"
    hosts: dict[str, Host] = {}
    try:
        try:
            ip("netns", "add", switch)
        except RuntimeError as exc:
            raise NamespacesUnavailableError(str(exc)) from None
        created.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for number, name in enumerate(names):
            namespace = f"t{token}h{number}"
            ip("netns", "add", namespace)
            created.append(namespace)
            host = Host(namespace, str(next(addresses)), "eth0")
            # One veth pair per host: eth0 inside the host, the other end a port of the bridge.
            ip("link", "add", f"t{token}p{number}", "type", "veth", "peer", "name", f"t{token}e{number}")
            ip("link", "set", f"t{token}p{number}", "netns", switch)
            ip("link", "set", f"t{token}e{number}", "netns", namespace)
            ip("-n", namespace, "link", "set", f"t{token}e{number}", "name", host.interface)
            ip("-n", namespace, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", host.interface)
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", namespace, "link", "set", host.interface, "up")
            ip("-n", switch, "link", "set", f"t{token}p{number}", "master", "br0", "up")
            hosts[name] = host
        # The test's own link into the network, from the namespace it runs in.
        test_address = str(subnet.broadcast_address - 1)
        ip("link", "add", root_link, "type", "veth", "peer", "name", f"t{token}pt")
        ip("link", "set", f"t{token}pt", "netns", switch)
        ip("-n", switch, "link", "set", f"t{token}pt", "master", "br0", "up")
        ip("addr", "add", f"{test_address}/{subnet.prefixlen}", "dev", root_link)
        ip("link", "set", root_link, "up")
        hosts["test"] = Host("", test_address, root_link)
        yield hosts
    finally:
        ip("link", "del", root_link, check=False)
        for namespace in reversed(created):
            # Processes still inside a namespace would keep it alive: the caller stops its processes first.
            pids = ip("netns", "pids", namespace, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            ip("netns", "del", namespace, check=False)

"""The test support's own promises: the loopback ports it hands out for the services it starts."""

from support import servers


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    # An ephemeral port can be taken by a client's connect() between the pick and the service's bind.
    ports = [servers.free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    assert all(servers.LISTEN_PORTS_LOW <= port < servers.ephemeral_ports_low() for port in ports), ports

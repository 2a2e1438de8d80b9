"""Whether a list of CIDR ranges, taken together, lets the whole internet in (issue 10, item 5):
`0.0.0.0/1` + `128.0.0.0/1` is `0.0.0.0/0` in two strings, so the union is judged, not each one."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# IANA IPv6 Global Unicast Address Assignments: every public IPv6 address is in 2000::/3
# (https://www.iana.org/assignments/ipv6-unicast-address-assignments).
IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
IPV4_ALL = ipaddress.IPv4Network("0.0.0.0/0")


def _uncovered_v4(ranges: list[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    remaining = [IPV4_ALL]
    for network in ipaddress.collapse_addresses(ranges):
        next_remaining: list[ipaddress.IPv4Network] = []
        for block in remaining:
            if network.supernet_of(block):
                continue
            if block.supernet_of(network):
                next_remaining.extend(block.address_exclude(network))
            else:
                next_remaining.append(block)
        remaining = next_remaining
    return remaining


def open_to_internet(cidrs: Iterable[str]) -> str | None:
    """A reason when the ranges together admit every public address of IPv4 or IPv6, else None."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        (v4 if isinstance(network, ipaddress.IPv4Network) else v6).append(network)  # type: ignore[arg-type]
    if v4 and all(not block.is_global for block in _uncovered_v4(v4)):
        return "together these ranges admit every public IPv4 address"
    if v6 and any(n.supernet_of(IPV6_GLOBAL_UNICAST) for n in ipaddress.collapse_addresses(v6)):
        return "together these ranges admit every public IPv6 address"
    return None

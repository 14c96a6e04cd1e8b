"""The Docker engine's networks and their subnets, and a free one for a new stack's own."""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess


def engine_networks() -> dict[str, list[str]]:
    """Every network on the engine with its IPv4 subnets."""
    ids = subprocess.run(["docker", "network", "ls", "-q"], capture_output=True, text=True,
                         check=True).stdout.split()
    inspected = json.loads(subprocess.run(["docker", "network", "inspect", *ids],
                                          capture_output=True, text=True, check=True).stdout)
    return {network["Name"]: [config["Subnet"] for config in
                              (network.get("IPAM") or {}).get("Config") or []
                              if ":" not in config.get("Subnet", ":")]
            for network in inspected}


def free_subnet(second_octet: int) -> ipaddress.IPv4Network:
    """A 10.<second_octet>.x.0/24 that overlaps no network on the engine, chosen at random so
    that two stacks on one engine seldom race for the same one."""
    networks = engine_networks()
    taken = [ipaddress.ip_network(subnet, strict=False)
             for subnets in networks.values() for subnet in subnets]
    for _ in range(50):
        candidate = ipaddress.ip_network(f"10.{second_octet}.{20 + secrets.randbelow(200)}.0/24")
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise RuntimeError(f"no free 10.{second_octet}.x.0/24 on the engine: {networks}")

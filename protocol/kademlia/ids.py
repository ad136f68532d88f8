"""160-bit node IDs, the XOR metric and contacts (specs/dht.md §3).

Kademlia (Maymounkov and Mazières, 2002, §2.1) places nodes and keys in one
160-bit space and measures closeness as the XOR of two IDs read as an unsigned
big-endian integer.  A mu node's ID is SHA-256 of its Ed25519 public key cut to
20 bytes (``protocol.identity``); a stock ``kademlia`` node picks a random ID,
so a contact's ID says nothing about who it is until it signs a contact record
(``protocol.kademlia.records``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from protocol.identity import NODE_ID_SIZE

#: Bits in a node ID or key (Kademlia §2.1).
ID_BITS = NODE_ID_SIZE * 8
#: Bucket size and lookup result size (Kademlia §2.2; DESIGN.md, Network).
K = 20
#: Requests in flight during one iterative lookup (Kademlia §2.3).
ALPHA = 3
#: Longest host string a contact may carry (a DNS name's maximum length).
MAX_HOST_LENGTH = 253
_HOST = re.compile(r"[A-Za-z0-9.\-:_]{1,253}")


class KademliaError(ValueError):
    """A value handed to the Kademlia code is malformed."""


def check_id(value: object, what: str = "node id") -> bytes:
    """Return ``value`` if it is a 20-byte ``bytes`` ID, else raise KademliaError."""
    if not isinstance(value, bytes) or len(value) != NODE_ID_SIZE:
        raise KademliaError(f"{what} must be {NODE_ID_SIZE} bytes")
    return value


def distance(a: bytes, b: bytes) -> int:
    """XOR distance between two 20-byte IDs as a non-negative integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own_id: bytes, other_id: bytes) -> int:
    """Index of the k-bucket that holds ``other_id`` in ``own_id``'s table.

    Bucket i holds the IDs at distance [2**i, 2**(i+1)) (Kademlia §2.2); an ID
    equal to ``own_id`` has no bucket and raises KademliaError.
    """
    d = distance(own_id, other_id)
    if d == 0:
        raise KademliaError("an id has no bucket in its own table")
    return d.bit_length() - 1


def check_host(host: object) -> str:
    """Validate an IP literal or host name carried in a contact or record."""
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise KademliaError("host must be 1..253 characters of [A-Za-z0-9.-:_]")
    return host


def check_port(port: object, what: str = "port") -> int:
    """Validate a UDP or TCP port number (1..65535)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise KademliaError(f"{what} must be an integer in 1..65535")
    return port


@lru_cache(maxsize=1024)
def is_ip_literal(host: str) -> bool:
    """True if ``host`` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1024)
def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1, where a loopback devnet may lift the address limits (§5.3 Address limits)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Contact:
    """A node as the routing table knows it: ID and UDP address.

    ``public_key`` is set only once the node has shown a contact record signed
    by a key that hashes to ``node_id`` (a mu node, specs/dht.md §3.2); it is
    empty for plain ``kademlia`` contacts.
    """

    node_id: bytes
    host: str
    port: int
    public_key: bytes = b""

    def __post_init__(self) -> None:
        check_id(self.node_id)
        check_host(self.host)
        check_port(self.port)
        if self.public_key and len(self.public_key) != 32:
            raise KademliaError("contact public key must be 32 bytes or empty")

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) pair to send datagrams to."""
        return (self.host, self.port)

    @property
    def is_mu(self) -> bool:
        """True if the contact proved it holds the key behind its node ID."""
        return bool(self.public_key)

    def to_wire(self) -> list[object]:
        """The ``[id, ip, port]`` triple of ``find_node`` replies (specs/dht.md §4.3)."""
        return [self.node_id, self.host, self.port]

    @classmethod
    def from_wire(cls, item: object) -> Contact:
        """Parse one ``[id, ip, port]`` triple from a peer; raise KademliaError."""
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise KademliaError("a contact is a [node_id, host, port] triple")
        node_id, host, port = item
        # Only IP literals: a peer must not make us resolve names it chose
        # (DNS amplification), and replies are matched by source IP (§4.1).
        if not is_ip_literal(check_host(host)):
            raise KademliaError("a contact's host must be an IP address")
        return cls(check_id(node_id), host, check_port(port))

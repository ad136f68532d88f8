"""Kademlia for mu, sans I/O (specs/dht.md).

IDs and the XOR metric, the routing table, the iterative lookup state
machine, rpcudp datagrams, signed provider, contact and mutable records, announce
tokens, bounded stores and the on-disk table format.  ``node.dht`` runs them
over UDP on trio.
"""

from protocol.kademlia.ids import ALPHA, ID_BITS, K, Contact, KademliaError, bucket_index, distance
from protocol.kademlia.lookup import REQUEST_TIMEOUT, Lookup
from protocol.kademlia.mutable import MAX_MUTABLE_VALUE, MutableRecord, MutableStore, mutable_key, sign_mutable
from protocol.kademlia.records import (
    DEFAULT_PROVIDER_TTL,
    MAX_PROVIDER_TTL,
    ContactInfo,
    ContactRecord,
    ProviderRecord,
    check_token,
    make_token,
)
from protocol.kademlia.routing import AddResult, AddStatus, RoutingTable
from protocol.kademlia.storage import ProviderStore, ValueStore
from protocol.kademlia.table_file import TableFileError, decode_table, encode_table
from protocol.kademlia.wire import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    decode_datagram,
    encode_request,
    encode_response,
)

__all__ = [
    "ALPHA", "ID_BITS", "K", "Contact", "KademliaError", "bucket_index", "distance",
    "REQUEST_TIMEOUT", "Lookup", "DEFAULT_PROVIDER_TTL", "MAX_PROVIDER_TTL", "ContactInfo", "ContactRecord",
    "ProviderRecord", "check_token", "make_token", "AddResult", "AddStatus", "RoutingTable", "ProviderStore",
    "ValueStore", "TableFileError", "decode_table", "encode_table", "ErrorCode", "LocalProtocolError",
    "ProtocolError", "RemoteProtocolError", "Request", "Response", "decode_datagram", "encode_request",
    "encode_response", "MAX_MUTABLE_VALUE", "MutableRecord", "MutableStore", "mutable_key", "sign_mutable",
]

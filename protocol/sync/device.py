"""Devices of a synced folder: certificates, per-device records and the roster (specs/sync.md §Devices).

Tahoe-LAFS magic-folder's model: every device has its own Ed25519 key and
publishes its own state as its own mutable record (specs/dht.md §7.3
Mutable record), so no two devices ever write the same record.  The
folder's write capability signs each writing device's key (a
**certificate**); a read-only device holds only the read capability, can
get no certificate, and its records are refused by the others.

The folder's own mutable record (under the folder key) holds the
**roster**: the device ids the write capability has admitted, so a device
that joins with a link finds the others without any of them online.

Pure: bytes in, values out.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from protocol.chunks import ADDRESS_SIZE, KEY_SIZE, Link
from protocol.folders import ReadCap, WriteCap
from protocol.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify_signature

from .state import FolderState
from .vector import DEVICE_ID_SIZE, SyncError, check_device

DEVICE_RECORD_VERSION = 2
ROSTER_VERSION = 1
CERTIFICATE_LABEL = b"mu:sync-device:v1"
_LINK_PAD_LABEL = b"mu:sync-state:v1"
_NODE_PAD_LABEL = b"mu:sync-node:v1"
#: The node a device runs on, so the others can notify it (specs/sync.md §16 Notify).
NODE_ID_SIZE = 20
_NO_NODE = bytes(NODE_ID_SIZE)
#: version || folder key || certificate || state root || state key XOR pad || node id XOR node pad
DEVICE_RECORD_SIZE = 1 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE + ADDRESS_SIZE + KEY_SIZE + NODE_ID_SIZE
#: Devices one roster names: version || ids must fit one mutable value (1000 bytes).
MAX_DEVICES = 31


def _certified_message(folder: bytes, device: bytes) -> bytes:
    return CERTIFICATE_LABEL + folder + device


def certify_device(cap: WriteCap, device: bytes) -> bytes:
    """The write capability's signature admitting ``device`` to the folder (§Device certificates)."""
    check_device(device)
    return Identity(cap.seed).sign(_certified_message(cap.public_key, device))


def certificate_valid(folder: bytes, device: bytes, certificate: bytes) -> bool:
    """Whether ``certificate`` is the folder key's signature admitting ``device``."""
    if len(folder) != PUBLIC_KEY_SIZE or len(device) != DEVICE_ID_SIZE or len(certificate) != SIGNATURE_SIZE:
        return False
    return verify_signature(folder, _certified_message(folder, device), certificate)


def _pad(read_key: bytes, device: bytes, root: bytes) -> bytes:
    # Bound to the device as well as the root: two devices publishing equal states
    # still show a host nothing it could relate beyond the root it keeps anyway.
    return hmac.new(read_key, _LINK_PAD_LABEL + device + root, hashlib.sha256).digest()


def _node_pad(read_key: bytes, device: bytes, root: bytes) -> bytes:
    # Only the folder's devices learn which node a device runs on: a host keeping the
    # record cannot tie the device to a node address.
    return hmac.new(read_key, _NODE_PAD_LABEL + device + root, hashlib.sha256).digest()[:NODE_ID_SIZE]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What one device's mutable record says: its folder, its certificate, its current state's link, its node.

    ``node`` is the node id the device runs on, or None if it runs on none
    (it is then never notified, only polled).
    """

    folder: bytes
    certificate: bytes
    state: Link
    node: bytes | None = None

    def encode(self, read_key: bytes, device: bytes) -> bytes:
        """``2 || folder || certificate || root || key XOR pad || node XOR node pad`` (§Per-device records)."""
        assert self.state.key is not None
        node = _NO_NODE if self.node is None else self.node
        if len(node) != NODE_ID_SIZE or node == _NO_NODE and self.node is not None:
            raise SyncError(f"a node id is {NODE_ID_SIZE} bytes, not all zero")
        root = self.state.root
        return (bytes([DEVICE_RECORD_VERSION]) + self.folder + self.certificate + root
                + _xor(self.state.key, _pad(read_key, device, root)) + _xor(node, _node_pad(read_key, device, root)))


def state_root(value: bytes) -> bytes:
    """The state blob's root a device record names (what a host keeps; no key needed)."""
    if len(value) != DEVICE_RECORD_SIZE or value[0] != DEVICE_RECORD_VERSION:
        raise SyncError(f"a device record is {DEVICE_RECORD_SIZE} bytes of version {DEVICE_RECORD_VERSION}")
    start = 1 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE
    return value[start:start + ADDRESS_SIZE]


def decode_device_record(cap: ReadCap, device: bytes, value: bytes) -> DeviceRecord:
    """Read and check device ``device``'s record value for the folder ``cap`` opens.

    Raises:
        SyncError: malformed, for another folder, or its certificate is not
            the folder key's signature over this device (a read-only device,
            or a key nobody admitted): the record is refused whole.
    """
    root = state_root(value)
    folder = value[1:1 + PUBLIC_KEY_SIZE]
    certificate = value[1 + PUBLIC_KEY_SIZE:1 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE]
    if folder != cap.public_key:
        raise SyncError("the device record belongs to another folder")
    if not certificate_valid(folder, device, certificate):
        raise SyncError("bad certificate: the folder's write link did not admit this device")
    start = 1 + PUBLIC_KEY_SIZE + SIGNATURE_SIZE + ADDRESS_SIZE
    key = _xor(value[start:start + KEY_SIZE], _pad(cap.read_key, device, root))
    node = _xor(value[start + KEY_SIZE:], _node_pad(cap.read_key, device, root))
    return DeviceRecord(folder, certificate, Link(root, key), None if node == _NO_NODE else node)


def parse_device_state(device: bytes, data: bytes) -> FolderState:
    """Decode the state a device record links to; it must be that device's own (§Per-device records).

    Raises:
        SyncError: the state breaks §State format, or names another device.
    """
    state = FolderState.parse(data)
    if state.device != device:
        raise SyncError("the linked state belongs to another device than the record's")
    return state


def encode_roster(devices: frozenset[bytes]) -> bytes:
    """The folder record's value: ``1 || device id ...`` sorted (§Roster)."""
    if len(devices) > MAX_DEVICES:
        raise SyncError(f"a folder has at most {MAX_DEVICES} writing devices")
    return bytes([ROSTER_VERSION]) + b"".join(sorted(check_device(d) for d in devices))


def decode_roster(value: bytes) -> frozenset[bytes]:
    """The device ids a roster value admits.

    Raises:
        SyncError: wrong version, a length that is not whole ids, ids not
            strictly ascending, or more than ``MAX_DEVICES``.
    """
    body = value[1:]
    if value[:1] != bytes([ROSTER_VERSION]) or len(body) % DEVICE_ID_SIZE:
        raise SyncError(f"a roster is version {ROSTER_VERSION} then whole {DEVICE_ID_SIZE}-byte device ids")
    ids = [body[i:i + DEVICE_ID_SIZE] for i in range(0, len(body), DEVICE_ID_SIZE)]
    if len(ids) > MAX_DEVICES or any(a >= b for a, b in zip(ids, ids[1:])):
        raise SyncError(f"a roster names at most {MAX_DEVICES} devices, strictly ascending")
    return frozenset(ids)

"""Device certificates, per-device record values and the roster (specs/sync.md §Devices)."""

from __future__ import annotations

import pytest

from protocol.chunks import Link
from protocol.folders import ReadCap, WriteCap
from protocol.identity import Identity
from protocol.sync import (
    DEVICE_RECORD_SIZE,
    MAX_DEVICES,
    DeviceRecord,
    FolderState,
    SyncError,
    certificate_valid,
    certify_device,
    decode_device_record,
    decode_roster,
    encode_roster,
    parse_device_state,
    state_root,
)

CAP = WriteCap(bytes([7]) * 32)
OTHER = WriteCap(bytes([8]) * 32)
DEVICE = Identity(bytes([1]) * 32).public_key
READ_ONLY = Identity(bytes([2]) * 32).public_key
STATE = Link(bytes([3]) * 32, bytes([4]) * 32)


def record_value(cap: WriteCap = CAP, device: bytes = DEVICE, certificate: bytes | None = None) -> bytes:
    cert = certify_device(cap, device) if certificate is None else certificate
    return DeviceRecord(cap.public_key, cert, STATE).encode(cap.read_key, device)


def test_a_certified_device_record_round_trips_and_hides_the_state_key() -> None:
    value = record_value()
    assert len(value) == DEVICE_RECORD_SIZE
    assert STATE.key is not None and STATE.key not in value
    assert state_root(value) == STATE.root
    record = decode_device_record(CAP.read_cap, DEVICE, value)
    assert record.state == STATE and record.folder == CAP.public_key


def test_the_certificate_binds_folder_and_device() -> None:
    cert = certify_device(CAP, DEVICE)
    assert certificate_valid(CAP.public_key, DEVICE, cert)
    assert not certificate_valid(CAP.public_key, READ_ONLY, cert)
    assert not certificate_valid(OTHER.public_key, DEVICE, cert)
    assert not certificate_valid(CAP.public_key, DEVICE, cert[:-1])


def test_a_read_only_device_cannot_make_a_certificate_the_others_accept() -> None:
    # A read-only device holds the read key and the public key only: the best it can do is
    # sign with its own key, or reuse another device's certificate.
    own = Identity(bytes([2]) * 32).sign(b"mu:sync-device:v1" + CAP.public_key + READ_ONLY)
    for forged in (own, certify_device(CAP, DEVICE), bytes(64)):
        value = record_value(device=READ_ONLY, certificate=forged)
        with pytest.raises(SyncError, match="bad certificate"):
            decode_device_record(CAP.read_cap, READ_ONLY, value)


def test_a_record_of_another_folder_or_malformed_is_refused() -> None:
    with pytest.raises(SyncError, match="another folder"):
        decode_device_record(CAP.read_cap, DEVICE, record_value(cap=OTHER))
    value = record_value()
    for bad in (value[:-1], value + b"\0", bytes([1]) + value[1:], b""):
        with pytest.raises(SyncError):
            decode_device_record(CAP.read_cap, DEVICE, bad)


def test_the_wrong_read_key_yields_a_wrong_state_key() -> None:
    record = decode_device_record(ReadCap(OTHER.read_key, CAP.public_key), DEVICE, record_value())
    assert record.state.root == STATE.root and record.state.key != STATE.key


def test_roster_round_trips_and_refuses_what_breaks_its_rules() -> None:
    ids = frozenset(bytes([i]) * 32 for i in range(1, MAX_DEVICES + 1))
    value = encode_roster(ids)
    assert len(value) <= 1000 and decode_roster(value) == ids
    assert decode_roster(encode_roster(frozenset())) == frozenset()
    with pytest.raises(SyncError):
        encode_roster(ids | {bytes([0]) * 32})
    a, b = bytes([1]) * 32, bytes([2]) * 32
    for bad in (b"", b"\x02" + a, b"\x01" + a[:-1], b"\x01" + b + a, b"\x01" + a + a):
        with pytest.raises(SyncError):
            decode_roster(bad)


def test_a_linked_state_must_be_the_record_devices_own() -> None:
    data = FolderState.of(DEVICE).serialize()
    assert parse_device_state(DEVICE, data).device == DEVICE
    with pytest.raises(SyncError, match="another device"):
        parse_device_state(READ_ONLY, data)
    with pytest.raises(SyncError):
        parse_device_state(DEVICE, data + b"\0")


def test_a_device_record_names_its_node_to_read_link_holders_only() -> None:
    node = bytes(range(20))
    value = DeviceRecord(CAP.public_key, certify_device(CAP, DEVICE), STATE, node).encode(CAP.read_key, DEVICE)
    assert len(value) == DEVICE_RECORD_SIZE and node not in value
    assert decode_device_record(CAP.read_cap, DEVICE, value).node == node
    assert decode_device_record(CAP.read_cap, DEVICE, record_value()).node is None  # no node: polled only
    with pytest.raises(SyncError, match="node id"):
        DeviceRecord(CAP.public_key, certify_device(CAP, DEVICE), STATE, bytes(20)).encode(CAP.read_key, DEVICE)

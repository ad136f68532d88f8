"""Bodies of the channel messages and of the ``payment`` field (specs/payments.md §Channel messages).

The wire layer carries these as plain msgpack maps (``ChannelMessage.fields``
and ``GetChunk.payment``); this module turns them into validated records and
back.  A malformed map raises ``LocalPaymentError(BAD_PAYMENT)``, which the
receiver answers with ERROR BAD_PAYMENT.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from protocol.payments.accounting import REDELIVERY_DEPTH
from protocol.payments.errors import LocalPaymentError, PaymentErrorCode
from protocol.payments.vocabulary import Kind

TXID_SIZE = 32
CHANNEL_ID_SIZE = 36  # txid || vout u32be
CHUNK_ADDRESS_SIZE = 32
PUBKEY_SIZE = 33
MAX_SIGNATURE_SIZE = 73  # DER (at most 72) + sighash byte
MAX_SATS = 21 * 10**14
MAX_VOUT = 2**32 - 1
_VOUT = struct.Struct(">I")
_KINDS = frozenset(kind.value for kind in Kind)  # a charge's kind on the wire (CHANNEL_STATE `recent`)


def _bad(what: str) -> LocalPaymentError:
    return LocalPaymentError(PaymentErrorCode.BAD_PAYMENT, what)


def _uint(value: object, name: str, bound: int = MAX_SATS) -> int:
    if type(value) is not int or not 0 <= value <= bound:
        raise _bad(f"{name} must be an integer in [0, {bound}]")
    return value


def _bin(value: object, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise _bad(f"{name} must be bytes")
    if size is not None and len(value) != size:
        raise _bad(f"{name} must be {size} bytes")
    if max_size is not None and not 0 < len(value) <= max_size:
        raise _bad(f"{name} must be 1 to {max_size} bytes")
    return value


def _keys(value: object, required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != required:
        raise _bad(f"expected exactly the fields {sorted(required)}")
    return value


@dataclass(frozen=True, slots=True, order=True)
class ChannelId:
    """A channel's funding outpoint: txid (internal byte order) and vout."""

    txid: bytes
    vout: int

    def __post_init__(self) -> None:
        _bin(self.txid, "txid", TXID_SIZE)
        _uint(self.vout, "vout", MAX_VOUT)

    def to_bytes(self) -> bytes:
        """The 36-byte wire form: txid || vout (u32 big-endian)."""
        return self.txid + _VOUT.pack(self.vout)

    @classmethod
    def from_bytes(cls, raw: object) -> ChannelId:
        """Parse the wire form; raise BAD_PAYMENT when malformed."""
        raw = _bin(raw, "channel", CHANNEL_ID_SIZE)
        return cls(raw[:TXID_SIZE], _VOUT.unpack(raw[TXID_SIZE:])[0])

    def __str__(self) -> str:
        """``<txid in display order, hex>:<vout>``, as the ledger and CLI write it."""
        return f"{self.txid[::-1].hex()}:{self.vout}"

    @classmethod
    def parse(cls, text: str) -> ChannelId:
        """Inverse of ``str()``; raises ValueError when malformed."""
        txid_hex, sep, vout = text.partition(":")
        if not sep or len(txid_hex) != 2 * TXID_SIZE or not vout.isdigit():
            raise ValueError(f"not a channel id: {text!r}")
        return cls(bytes.fromhex(txid_hex)[::-1], int(vout))


@dataclass(frozen=True, slots=True, kw_only=True)
class Payment:
    """The ``payment`` field of GET_CHUNK / PUT_CHUNK."""

    channel: ChannelId
    total: int
    sig: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"channel": self.channel.to_bytes(), "total": self.total, "sig": self.sig}

    @classmethod
    def from_wire(cls, value: object) -> Payment:
        fields = _keys(value, {"channel", "total", "sig"})
        return cls(
            channel=ChannelId.from_bytes(fields["channel"]),
            total=_uint(fields["total"], "total"),
            sig=_bin(fields["sig"], "sig", max_size=MAX_SIGNATURE_SIZE),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenChannel:
    """OPEN_CHANNEL: the payer's funded output and channel parameters."""

    channel: ChannelId
    capacity: int
    expiry: int
    payer_pubkey: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"txid": self.channel.txid, "vout": self.channel.vout, "capacity": self.capacity,
                "expiry": self.expiry, "payer_pubkey": self.payer_pubkey}

    @classmethod
    def from_wire(cls, value: object) -> OpenChannel:
        fields = _keys(value, {"txid", "vout", "capacity", "expiry", "payer_pubkey"})
        pubkey = _bin(fields["payer_pubkey"], "payer_pubkey", PUBKEY_SIZE)
        if pubkey[0] not in (2, 3):
            raise _bad("payer_pubkey must be a compressed point")
        return cls(
            channel=ChannelId(_bin(fields["txid"], "txid", TXID_SIZE), _uint(fields["vout"], "vout", MAX_VOUT)),
            capacity=_uint(fields["capacity"], "capacity"),
            expiry=_uint(fields["expiry"], "expiry", 500_000_000 - 1),  # a block height, not a time
            payer_pubkey=pubkey,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelState:
    """CHANNEL_STATE / CHANNEL_ACCEPTED reply: what the payee has recorded."""

    channel: ChannelId
    total: int
    consumed: int
    paid: int
    last_chunk: bytes | None
    last_kind: str | None
    # The payee's last REDELIVERY_DEPTH charges (chunk, kind), oldest first:
    # the requests it would serve again without a new charge.
    recent: tuple[tuple[bytes, str], ...] = ()
    # The payer's signature of ``total`` (nil while the total is 0): the
    # proof a payer needs before it adopts a total above its own record.
    sig: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"channel": self.channel.to_bytes(), "total": self.total, "consumed": self.consumed,
                "paid": self.paid, "last_chunk": self.last_chunk, "last_kind": self.last_kind,
                "recent": [[chunk, kind] for chunk, kind in self.recent], "sig": self.sig}

    @classmethod
    def from_wire(cls, value: object) -> ChannelState:
        fields = _keys(value, {"channel", "total", "consumed", "paid", "last_chunk", "last_kind", "recent", "sig"})
        total = _uint(fields["total"], "total")
        sig = fields["sig"]
        if sig is not None:
            _bin(sig, "sig", max_size=MAX_SIGNATURE_SIZE)
        if (total == 0) != (sig is None):
            raise _bad("sig must be the payer's signature of total, nil exactly when total is 0")
        last_chunk = fields["last_chunk"]
        if last_chunk is not None:
            _bin(last_chunk, "last_chunk", CHUNK_ADDRESS_SIZE)
        if fields["last_kind"] is not None and fields["last_kind"] not in _KINDS:
            raise _bad("last_kind must be get, put, audit or nil")
        listed = fields["recent"]
        if not isinstance(listed, (list, tuple)) or len(listed) > REDELIVERY_DEPTH:
            raise _bad(f"recent must be a list of at most {REDELIVERY_DEPTH} charges")
        recent: list[tuple[bytes, str]] = []
        for item in listed:
            if not isinstance(item, (list, tuple)) or len(item) != 2 or item[1] not in _KINDS:
                raise _bad("each recent charge must be [chunk, get|put|audit]")
            recent.append((_bin(item[0], "recent chunk", CHUNK_ADDRESS_SIZE), item[1]))
        return cls(
            channel=ChannelId.from_bytes(fields["channel"]),
            total=total,
            consumed=_uint(fields["consumed"], "consumed", 2**63 - 1),
            paid=_uint(fields["paid"], "paid", 2**63 - 1),
            last_chunk=last_chunk,
            last_kind=fields["last_kind"],
            recent=tuple(recent),
            sig=sig,
        )


def channel_request(value: object) -> ChannelId:
    """Parse a CHANNEL_STATE request (``{"channel": bin 36}``)."""
    return ChannelId.from_bytes(_keys(value, {"channel"})["channel"])

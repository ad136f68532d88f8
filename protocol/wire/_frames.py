"""Framing constants, message type codes and the frame header (specs/wire.md §5 Frames,
§6 Messages, §8 Limits and defaults).

After the handshake the byte stream is a sequence of records::

    record    = length:u32be || AESGCM(k, n, ad=length, frame) || tag:16
    frame     = header:12 || meta (msgpack map) || data (raw bytes)
    header    = version:u8 | type:u8 | flags:u16be | request_id:u32be | meta_length:u32be

One record carries exactly one frame; the data length is what remains of
the record after the header and meta.  A record may be larger than Noise's
65535-byte message limit: this is mu's documented extension
(specs/wire.md §4.2 Deviation from Noise: records above 65535 bytes), measured by scripts/bench-transport.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from protocol.chunks import MAX_SEALED_SIZE

WIRE_VERSION = 1
HEADER = struct.Struct(">BBHII")
HEADER_SIZE = HEADER.size  # 12
LENGTH_PREFIX = struct.Struct(">I")
LENGTH_PREFIX_SIZE = 4
TAG_SIZE = 16

# Hard bounds (specs/wire.md §8 Limits and defaults): checked before anything is allocated.
MAX_META_SIZE = 64 * 1024
MAX_DATA_SIZE = MAX_SEALED_SIZE  # the longest chunk mu makes: 4 MiB of plaintext and its tag
MAX_FRAME_SIZE = HEADER_SIZE + MAX_META_SIZE + MAX_DATA_SIZE
MAX_RECORD_SIZE = MAX_FRAME_SIZE + TAG_SIZE
MIN_RECORD_SIZE = HEADER_SIZE + TAG_SIZE
MAX_REQUEST_ID = 2**32 - 1

# Limits on msgpack meta contents (specs/wire.md §5 Frames, §6 Messages, §8 Limits and defaults).
MAX_HAVE_ADDRESSES = 1024
MAX_ERROR_TEXT = 256
MAX_TERMS_ENTRIES = 32
MAX_CHANNEL_FIELDS = 32
MAX_PAYMENT_SIZE = 4096


class Flags:
    """Bits of the header's 16-bit flags field; unknown bits are rejected."""

    RESPONSE = 0x0001
    KNOWN = RESPONSE


class MessageType(IntEnum):
    """The message type codes (specs/wire.md §6 Messages)."""

    HELLO = 0x01
    ERROR = 0x02
    GET_CHUNK = 0x10
    CHUNK = 0x11
    PUT_CHUNK = 0x12
    PUT_OK = 0x13
    HAVE = 0x14
    HAVE_REPLY = 0x15
    AUDIT = 0x16  # specs/erasure.md §7.1 Challenge and answer
    AUDIT_PROOF = 0x17
    # 0x20-0x2F: payment-channel messages, defined by specs/payments.md.
    OPEN_CHANNEL = 0x20
    CHANNEL_ACCEPTED = 0x21
    PAYMENT_ACK = 0x22
    CHANNEL_STATE = 0x23
    CLOSE_CHANNEL = 0x24
    BALANCE_ACK = 0x25  # one-way: a signed service balance acknowledgement (specs/payments.md §Service balance)
    CHANNEL_RESERVED_26 = 0x26
    CHANNEL_RESERVED_27 = 0x27
    CHANNEL_RESERVED_28 = 0x28
    CHANNEL_RESERVED_29 = 0x29
    CHANNEL_RESERVED_2A = 0x2A
    CHANNEL_RESERVED_2B = 0x2B
    CHANNEL_RESERVED_2C = 0x2C
    CHANNEL_RESERVED_2D = 0x2D
    CHANNEL_RESERVED_2E = 0x2E
    CHANNEL_RESERVED_2F = 0x2F
    SYNC_NOTIFY = 0x30  # specs/sync.md §16 Notify: a device published a new record


CHANNEL_TYPES = frozenset(t for t in MessageType if 0x20 <= t <= 0x2F)
# Types that may carry a non-empty data section.
DATA_TYPES = frozenset({MessageType.CHUNK, MessageType.PUT_CHUNK})

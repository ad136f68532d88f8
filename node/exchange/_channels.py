"""Glue between the exchange and ``protocol.bitcoin.channel``.

Channel parameters are stored in the ledger's ``params`` column as a
msgpack map (specs/payments.md §Ledger) and rebuilt into
``ChannelParams`` after a restart.  (The Bitcoin layer's payment refusals
are mapped onto the exchange's error codes in ``protocol.payments.payee``.)
"""

from __future__ import annotations

from typing import Any

import msgpack

from protocol.bitcoin import OutPoint, PublicKey
from protocol.bitcoin.channel import ChannelParams
from protocol.payments.messages import ChannelId

_PARAM_KEYS = frozenset({"txid", "vout", "capacity", "payer", "payee", "expiry", "fee_rate", "dust_limit"})


def outpoint_of(channel: ChannelId) -> OutPoint:
    """The Bitcoin layer's outpoint for a channel id."""
    return OutPoint(channel.txid, channel.vout)


def params_to_blob(params: ChannelParams) -> bytes:
    """The ledger's ``params`` column for ``params``."""
    return msgpack.packb({
        "txid": params.funding_outpoint.txid, "vout": params.funding_outpoint.index, "capacity": params.capacity,
        "payer": params.payer.data, "payee": params.payee.data, "expiry": params.expiry_height,
        "fee_rate": params.fee_rate, "dust_limit": params.dust_limit,
    })


def params_from_blob(blob: bytes) -> ChannelParams:
    """Inverse of ``params_to_blob``; raises ValueError on a damaged row."""
    values: Any = msgpack.unpackb(blob, raw=False)
    if not isinstance(values, dict) or set(values) != _PARAM_KEYS:
        raise ValueError("ledger channel params are damaged")
    return ChannelParams(
        funding_outpoint=OutPoint(values["txid"], values["vout"]), capacity=values["capacity"],
        payer=PublicKey(values["payer"]), payee=PublicKey(values["payee"]), expiry_height=values["expiry"],
        fee_rate=values["fee_rate"], dust_limit=values["dust_limit"],
    )


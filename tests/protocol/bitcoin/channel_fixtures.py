"""Shared channel fixtures for the Bitcoin tests (deterministic keys, no randomness)."""

from __future__ import annotations

from protocol.bitcoin import ChannelParams, OutPoint, PrivateKey, TxOut, funding_script

PAYER_KEY = PrivateKey.from_seed(b"test-payer")
PAYEE_KEY = PrivateKey.from_seed(b"test-payee")
OTHER_KEY = PrivateKey.from_seed(b"test-other")
FUNDING = OutPoint(bytes.fromhex("11" * 32), 1)
EXPIRY = 1_000


def make_params(capacity: int = 100_000, fee_rate: int = 2, expiry: int = EXPIRY, funding: OutPoint = FUNDING) -> ChannelParams:
    return ChannelParams(
        funding_outpoint=funding,
        capacity=capacity,
        payer=PAYER_KEY.public_key,
        payee=PAYEE_KEY.public_key,
        expiry_height=expiry,
        fee_rate=fee_rate,
    )


def spent(params: ChannelParams) -> list[TxOut]:
    """The funding output a channel transaction spends (for the pbk oracle)."""
    return [TxOut(params.capacity, funding_script(params))]

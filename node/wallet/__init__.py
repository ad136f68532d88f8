"""The node wallet (``specs/chain.md`` §7): see :mod:`node.wallet.wallet`."""

from node.wallet.wallet import (
    DEFAULT_FEE_RATE,
    KEY_COUNT,
    SEED_FILE,
    Coin,
    InsufficientFunds,
    Wallet,
    WalletError,
    derive_key,
    load_seed,
)

__all__ = [
    "DEFAULT_FEE_RATE", "KEY_COUNT", "SEED_FILE", "Coin", "InsufficientFunds", "Wallet",
    "WalletError", "derive_key", "load_seed",
]

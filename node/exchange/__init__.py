"""The paid chunk exchange: payee bookkeeping, payer channels, chain queries.

See ``specs/payments.md`` Part 2.
"""

from node.exchange._balance import BalanceBook
from node.exchange._chain import ChainView, FundingOutput
from node.exchange._link import HostLink
from node.exchange._payee import PayeeBook, PayeeEntry
from node.exchange._payer import FundedChannel, Payer
from node.exchange._server import PaidChunkServer

__all__ = ["BalanceBook", "ChainView", "FundedChannel", "FundingOutput", "HostLink", "PaidChunkServer", "PayeeBook", "PayeeEntry", "Payer"]

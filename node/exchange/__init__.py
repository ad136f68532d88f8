"""The paid chunk exchange: payee bookkeeping, payer channels, chain queries.

See ``specs/payments.md`` Part 2.
"""

from node.exchange._chain import ChainView, FundingOutput

__all__ = ["ChainView", "FundingOutput"]

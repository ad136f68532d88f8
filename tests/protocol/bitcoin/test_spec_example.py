"""The worked example of specs/payments.md §10, byte for byte (RFC 6979 makes signatures deterministic)."""

from __future__ import annotations

from protocol.bitcoin import PayeeChannel, PayerChannel, SignedCommitment, funding_script
from tests.helpers.kernel import assert_valid
from tests.protocol.bitcoin.channel_fixtures import PAYEE_KEY, PAYER_KEY, make_params, spent

SCRIPT = (
    "632103c62f0b0976326572572ea3e38af4eefffb3227cc1772faad031f94dae6022884ad670300350cb17568"
    "21024a354235d360a58c4bb47b2fbbfffca7e2135f728c9a7f3f36b66b2bfa8e8877ac"
)
CLOSE = (
    "0200000000010111111111111111111111111111111111111111111111111111111111111111110100000000ffffffff02102700"
    "0000000000160014ec83235e40a7f2036c6e0e98fb274ab41e01033e385e0100000000001600141e53c0e91d2586ec81e6953aa4"
    "7b483127abb33d04483045022100f7a7c4fe84a8728af908c23d50d1c6fc8121bdf57894e99018b6a509f761adba022029fe0918"
    "4180b707ef41ca086e91ff1c9bba969ab5d035a6540beb01eb68fbc501473044022013fb1eeae47ceba4d28368ba0970b8e974dc"
    "7442b902656c6fe52608fedf74a402203cfc939bb9ead60a2ccb8feed0042671a39a55ea0a787256aecc4dadbe7298e70101014f"
    + SCRIPT
    + "00000000"
)


def test_spec_worked_example() -> None:
    params = make_params(expiry=800_000)
    assert params.witness_script.hex() == SCRIPT
    assert funding_script(params).hex() == "0020172c78517b93fa435eb31880a0142f49ec1c7fdb3d21750b61b53095ac76cb37"
    assert (params.commitment_fee, params.max_total) == (344, 99_656)
    assert params.channel_id.hex() == "69cf8c01c4325d6f7c300966562d9f44549d165ab6f01b539eaebebf2e94ec76"
    payment = PayerChannel(params, PAYER_KEY).pay(10_000)
    assert SignedCommitment.parse(payment.serialize()) == payment
    payee = PayeeChannel(params, PAYEE_KEY)
    payee.accept(payment, 10_000)
    close = payee.close_transaction()
    assert close.hex() == CLOSE
    assert close.vsize() == 171
    assert_valid(close, spent(params))

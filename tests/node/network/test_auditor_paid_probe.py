"""The owner's side of a paid audit (specs/erasure.md §7.4 Paid audits) with stand-in session and payer:
only a proof that checks is paid; a wrong one is paid nothing; a probe refused because an earlier one is
unpaid is paid first, then checked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from node.files.audit import Auditor, ErasureBook
from node.transport import RequestError
from protocol.erasure import AuditChallenge, audit_answer
from protocol.wire import Audit, AuditProof, ErrorCode, ErrorMessage, Message

SHARE = os.urandom(3000)
HOST = b"\x07" * 32


@dataclass
class StandInHost:
    """A session to a host: answers probes (right, garbage, or refused as unpaid)."""

    peer_node_id: bytes = HOST
    mode: str = "honest"
    probes: int = 0

    async def request(self, message: Message) -> Message:
        assert isinstance(message, Audit) and not message.charge  # charged audits go through the payer
        self.probes += 1
        if self.mode == "unpaid":
            raise RequestError(ErrorMessage(request_id=1, code=ErrorCode.INSUFFICIENT_PAYMENT, owed=1))
        challenge = AuditChallenge(address=message.address, nonce=message.nonce, offset=message.offset,
                                   length=message.length)
        held = SHARE if self.mode == "honest" else os.urandom(len(SHARE))
        return AuditProof(request_id=1, proof=audit_answer(challenge, held))


@dataclass
class StandInDialer:
    host: StandInHost

    async def session(self, node_id: bytes) -> StandInHost:
        return self.host


@dataclass
class StandInPayer:
    """``PaidPeers.audit``: the charged AUDIT, answered by the host's copy, 1 sat each."""

    paid: list[AuditChallenge] = field(default_factory=list)

    async def audit(self, session: StandInHost, challenge: AuditChallenge) -> tuple[bytes, int]:
        self.paid.append(challenge)
        return audit_answer(challenge, SHARE if session.mode != "garbage" else b""), 1


def auditor(tmp_path: Path, mode: str) -> tuple[Auditor, StandInHost, StandInPayer]:
    host, payer = StandInHost(mode=mode), StandInPayer()
    return Auditor(None, StandInDialer(host), ErasureBook(tmp_path), payer), host, payer  # type: ignore[arg-type]


async def test_only_a_proof_that_checks_is_paid(tmp_path: Path) -> None:
    honest, host, payer = auditor(tmp_path, "honest")
    assert await honest.audit_share(HOST, SHARE) == (True, "", 1)
    assert host.probes == 1 and len(payer.paid) == 1
    liar, host, payer = auditor(tmp_path, "garbage")
    assert await liar.audit_share(HOST, SHARE) == (False, "wrong proof", 0)
    assert host.probes == 1 and payer.paid == []


async def test_a_probe_refused_as_unpaid_is_paid_first_then_checked(tmp_path: Path) -> None:
    owner, host, payer = auditor(tmp_path, "unpaid")
    assert await owner.audit_share(HOST, SHARE) == (True, "", 1)
    assert host.probes == 1 and len(payer.paid) == 1

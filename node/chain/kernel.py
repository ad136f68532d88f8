"""libbitcoinkernel through py-bitcoinkernel (``pbk`` 0.1.0a5): the judge.

Every block ``mu chain`` mines is handed to Bitcoin Core's
ChainstateManager, which checks it against all consensus rules and connects
it.  Facts about pbk 0.1.0a5 this wrapper is built around (found by trying
it, see ``specs/chain.md`` §6 libbitcoinkernel 0.1.0a5, as found by trying it):

* ``process_block`` either raises ``ProcessBlockException`` or returns
  whether the block was new; neither says "accepted".  The only reliable
  verdict is the active tip afterwards, plus the ``block_checked`` callback.
* Rejection reasons ("bad-witness-nonce-size", "time-too-old", ...) appear
  only in the kernel's log, delivered through a ``LoggingConnection``.
* One ChainstateManager per data dir; close by dropping the manager and its
  context, in that order.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path

import pbk

#: Kernel log lines kept for rejection reasons and `mu chain` diagnostics.
KERNEL_LOG_LINES = 256
_REASON = re.compile(r"(?<![\w-])([a-z][a-z0-9]*(?:-[a-z0-9]+)+)(?![\w-])")


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The kernel's verdict on one block."""

    accepted: bool
    new: bool
    reason: str


def _reason_from_log(lines: list[str]) -> str:
    """The first reject reason the kernel logged during a submit, e.g. "bad-txnmrklroot".

    Bitcoin Core's reject reasons are lowercase, hyphenated tokens starting
    with a letter ("high-hash", "bad-cb-amount", "time-too-old"); the first
    one logged is the cause, later lines only report consequences.
    """
    for line in lines:
        text = line.split("Z ", 1)[-1]  # drop the ISO timestamp prefix
        match = _REASON.search(text)
        if match:
            return match.group(1)
    return "rejected"


class Kernel:
    """A regtest ChainstateManager in ``directory``; single-threaded use."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._log: collections.deque[str] = collections.deque(maxlen=KERNEL_LOG_LINES)
        self._pending: list[str] = []  # lines logged during the current submit
        self._logging = pbk.LoggingConnection(self._on_log)
        self._checked: dict[bytes, tuple[pbk.ValidationMode, pbk.BlockValidationResult]] = {}
        callbacks = pbk.ValidationInterfaceCallbacks(block_checked=self._on_checked)
        self._chainman: pbk.ChainstateManager | None = pbk.load_chainman(
            directory, pbk.ChainType.REGTEST, validation_callbacks=callbacks
        )

    def _on_log(self, message: str) -> None:
        line = message.rstrip()
        self._log.append(line)
        if len(self._pending) < KERNEL_LOG_LINES:
            self._pending.append(line)

    def _on_checked(self, _user_data: object, block: pbk.Block, state: pbk.BlockValidationState) -> None:
        # The state is only valid during the callback: copy what we need.
        self._checked[bytes(block.block_hash)] = (state.validation_mode, state.block_validation_result)

    @property
    def chainman(self) -> pbk.ChainstateManager:
        if self._chainman is None:
            raise RuntimeError("kernel is closed")
        return self._chainman

    def tip(self) -> tuple[int, bytes]:
        """Height and hash (internal byte order) of the active tip."""
        chain = self.chainman.get_active_chain()
        height = chain.height
        return height, bytes(chain.block_tree_entries[height].block_hash)

    def block_bytes(self, height: int) -> bytes:
        """The serialized block at ``height`` of the active chain, read by the kernel."""
        chain = self.chainman.get_active_chain()
        return bytes(self.chainman.blocks[chain.block_tree_entries[height]])

    def recent_log(self) -> list[str]:
        return list(self._log)

    def submit(self, raw: bytes) -> SubmitResult:
        """Validate and connect one block; accepted means it became the tip."""
        try:
            block = pbk.Block(raw)
        except (RuntimeError, ValueError):
            return SubmitResult(False, False, "block decode failed")
        block_hash = bytes(block.block_hash)
        self._pending = []
        new = False
        try:
            new = self.chainman.process_block(block)
        except pbk.ProcessBlockException:
            pass
        checked = self._checked.pop(block_hash, None)
        self._checked.clear()
        _, tip_hash = self.tip()
        if tip_hash == block_hash:
            return SubmitResult(True, new, "")
        reason = _reason_from_log(self._pending)
        if reason == "rejected" and checked is not None:
            reason = checked[1].name.lower()
        if not new and reason == "rejected":
            reason = "duplicate"
        return SubmitResult(False, new, reason)

    def close(self) -> None:
        """Drop the manager, then its context; pbk flushes to disk on destroy."""
        self._chainman = None
        self._checked.clear()

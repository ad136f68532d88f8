"""Content-defined chunking: FastCDC cut points (specs/chunks.md §5.2 Content-defined cutting).

The cut rule is FastCDC (Xia et al., "FastCDC: a Fast and Efficient
Content-Defined Chunking Approach for Data Deduplication", USENIX ATC 2016)
in its 2020 form (IEEE TPDS 2020: two bytes per step, normalized chunking):
a gear rolling hash over the last 64 bytes, a stricter mask before the
average size and a looser one after it, no cut before ``CDC_MIN`` and a
forced cut at ``CDC_MAX``. The gear table and masks are fixed in the spec
(§A Gear table), so every implementation cuts a file at the same places.

The byte loop runs in ``pyfastcdc``'s compiled (Cython) module, which
releases the GIL and cuts at ~1.8 GiB/s; its output is pinned to the spec by
an independent implementation (scripts/vectors_chunks.py) and a test.

:class:`Chunker` is streaming: ``feed`` takes buffers of any size and
returns the chunks they completed; it keeps less than ``CDC_MAX`` bytes
between calls, because a cut decision never looks further than ``CDC_MAX``
bytes past the previous cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyfastcdc import FastCDC

from ._errors import LocalChunkError
from ._sizes import (CDC_AVG as CDC_AVG, CDC_HOLD_FACTOR as CDC_HOLD_FACTOR, CDC_MAX as CDC_MAX, CDC_MIN as CDC_MIN,
                     CDC_NORMALIZATION as CDC_NORMALIZATION, MiB)


@dataclass(frozen=True, slots=True)
class CdcParams:
    """The parameters of a FastCDC cut; a format-3 root records them (§6.2)."""

    min_size: int = CDC_MIN
    avg_size: int = CDC_AVG
    max_size: int = CDC_MAX
    normalization: int = CDC_NORMALIZATION

    def __post_init__(self) -> None:
        avg = self.avg_size
        if avg & (avg - 1) or not 256 <= avg <= CDC_MAX:
            raise LocalChunkError(f"the CDC average size is a power of two from 256 to {CDC_MAX}, got {avg}")
        if not 64 <= self.min_size <= avg <= self.max_size <= CDC_MAX:
            raise LocalChunkError(
                f"CDC sizes need 64 <= min <= avg <= max <= {CDC_MAX}, got "
                f"{self.min_size}/{avg}/{self.max_size}"
            )
        if self.min_size > 1 * MiB:
            raise LocalChunkError("the CDC minimum size is at most 1 MiB")
        if self.normalization not in (0, 1, 2, 3):
            raise LocalChunkError(f"the CDC normalization level is 0 to 3, got {self.normalization}")


DEFAULT_CDC = CdcParams()


class Chunker:
    """Cuts a byte stream into content-defined chunks.

    Usage::

        chunker = Chunker()
        for piece in pieces:
            for chunk in chunker.feed(piece):
                use(chunk)
        for chunk in chunker.finish():
            use(chunk)

    The chunks (fresh ``bytes``) and their lengths do not depend on how the
    stream was split into ``feed`` calls.
    """

    __slots__ = ("params", "_cdc", "_hold", "_buf", "_held", "_finished")

    def __init__(self, params: CdcParams = DEFAULT_CDC) -> None:
        self.params = params
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]  # checked in CdcParams
        )
        # Bytes not cut yet, gathered in one buffer of at most CDC_HOLD bytes
        # (§8.5 Bounds): cut only when it holds that many, then the uncut rest
        # (fewer than max_size bytes) moves to its front. The buffer grows
        # (doubling) as bytes come, so a 4 KiB file never zeroes the 8 MiB hold
        # (a folder of small files spent most of its time doing so); once
        # full size, no allocation per feed but the chunks themselves.
        self._hold = CDC_HOLD_FACTOR * params.max_size
        self._buf = bytearray()
        self._held = 0
        self._finished = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next bytes of the stream; return the chunks they completed, in order."""
        if self._finished:
            raise LocalChunkError("the chunker has finished")
        view = memoryview(data).cast("B")
        out: list[bytes] = []
        pos = 0
        while pos < len(view):
            if self._held == len(self._buf):
                self._buf.extend(bytes(min(max(len(self._buf), len(view) - pos), self._hold - len(self._buf))))
            take = min(len(self._buf) - self._held, len(view) - pos)
            self._buf[self._held:self._held + take] = view[pos:pos + take]
            self._held += take
            pos += take
            if self._held == self._hold:
                self._cut(out, final=False)
        return out

    def finish(self) -> list[bytes]:
        """End of stream: return the remaining chunks (none for an empty stream)."""
        if self._finished:
            raise LocalChunkError("the chunker has finished")
        self._finished = True
        out: list[bytes] = []
        self._cut(out, final=True)
        self._buf = bytearray()
        return out

    def _cut(self, out: list[bytes], *, final: bool) -> None:
        held = self._held
        # Every cut starting at least max_size bytes before the end of what
        # we hold is final: the rule never looks past max_size bytes (§5.2).
        limit = held if final else held - self.params.max_size
        start = 0
        if limit > 0:
            with memoryview(self._buf) as whole, whole[:held] as view:
                chunks = self._cdc.cut_buf(view)
                for chunk in chunks:
                    end = chunk.offset + chunk.length
                    out.append(bytes(view[start:end]))
                    start = end
                    if start >= limit:
                        break
                del chunks, chunk
        rest = held - start
        if rest and start:
            self._buf[:rest] = memoryview(self._buf)[start:held]  # overlapping: CPython moves with memmove
        self._held = rest


def cut_lengths(data: bytes | bytearray | memoryview, params: CdcParams = DEFAULT_CDC) -> list[int]:
    """The chunk lengths of a whole buffer (tests and vectors)."""
    chunker = Chunker(params)
    return [len(c) for c in chunker.feed(data) + chunker.finish()]

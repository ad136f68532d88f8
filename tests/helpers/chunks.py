"""Small in-memory helpers for chunk-format tests (no store, no files)."""

from __future__ import annotations

from collections.abc import Iterable

from protocol.chunks import CdcFileEncoder, FileDecoder, FileEncoder, Link

CS = 64 * 1024  # the smallest chunk size keeps tests fast


def encode(data: bytes, key: bytes, *, piece: int = 10_000, **kwargs: object) -> tuple[Link, dict[bytes, bytes], list[bytes]]:
    """Encode ``data`` fed in ``piece``-sized slices; return (link, chunks by address, emit order)."""
    enc = FileEncoder(key, **kwargs)  # type: ignore[arg-type]
    chunks: dict[bytes, bytes] = {}
    order: list[bytes] = []
    step = max(1, piece)
    for start in range(0, len(data), step):
        collect(enc.feed(data[start:start + step]), chunks, order)
    collect(enc.finish(), chunks, order)
    return enc.link, chunks, order


def collect(produced: Iterable[tuple[bytes, bytes | bytearray]], chunks: dict[bytes, bytes], order: list[bytes]) -> None:
    """Keep chunks an encoder produced: by address in ``chunks``, their addresses in ``order``."""
    for address, chunk in produced:
        chunks[address] = bytes(chunk)
        order.append(address)


def decode(link: Link, chunks: dict[bytes, bytes]) -> bytes:
    """Decode a file from an in-memory chunk map."""
    dec = FileDecoder.from_link(link)
    out = bytearray()
    while (address := dec.next_address()) is not None:
        out += dec.feed(chunks[address])
    return bytes(out)


def encode_v3(data: bytes, *, piece: int = 10_000, **kwargs: object) -> tuple[Link, dict[bytes, bytes], list[bytes]]:
    """Format 3 (content-defined chunks): like :func:`encode`; ``kwargs`` go to CdcFileEncoder (key or chunk_secret)."""
    enc = CdcFileEncoder(**kwargs)  # type: ignore[arg-type]
    chunks: dict[bytes, bytes] = {}
    order: list[bytes] = []
    step = max(1, piece)
    for start in range(0, len(data), step):
        collect(enc.feed(data[start:start + step]), chunks, order)
    collect(enc.finish(), chunks, order)
    return enc.link, chunks, order

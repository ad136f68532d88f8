"""Small in-memory helpers for chunk-format tests (no store, no files)."""

from __future__ import annotations

from protocol.chunks import FileDecoder, FileEncoder, Link

CS = 64 * 1024  # the smallest chunk size keeps tests fast


def encode(data: bytes, key: bytes, *, piece: int = 10_000, **kwargs: object) -> tuple[Link, dict[bytes, bytes], list[bytes]]:
    """Encode ``data`` fed in ``piece``-sized slices; return (link, chunks by address, emit order)."""
    enc = FileEncoder(key, **kwargs)  # type: ignore[arg-type]
    chunks: dict[bytes, bytes] = {}
    order: list[bytes] = []
    step = max(1, piece)
    for start in range(0, len(data), step):
        for address, chunk in enc.feed(data[start:start + step]):
            chunks[address] = bytes(chunk)
            order.append(address)
    for address, chunk in enc.finish():
        chunks[address] = bytes(chunk)
        order.append(address)
    return enc.link, chunks, order


def decode(link: Link, chunks: dict[bytes, bytes]) -> bytes:
    """Decode a file from an in-memory chunk map."""
    dec = FileDecoder.from_link(link)
    out = bytearray()
    while (address := dec.next_address()) is not None:
        out += dec.feed(chunks[address])
    return bytes(out)

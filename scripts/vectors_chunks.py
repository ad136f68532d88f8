"""Regenerate tests/vectors/chunks.json from specs/chunks.md alone (formats 2 and 3).

A second, independent implementation of the chunk format, written from the
spec: it uses neither ``protocol/`` nor pycryptodome nor msgpack, but the
``cryptography`` package's HKDF and AES-GCM and hand-packed MessagePack, so
the frozen vectors do not merely echo the code they test. Format 3's
FastCDC cut (§5.2) is a byte-by-byte loop here, with the gear table and
masks read from §A of the spec itself (a few seconds). ``cryptography``
is not a project dependency: run this with any Python that has it, e.g.
``python3 scripts/vectors_chunks.py > tests/vectors/chunks.json``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

FILE_KEY = bytes(range(32))
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
VERSION = 2
KIND_DATA, KIND_INDEX, KIND_ROOT = 0, 1, 2


def prk(file_key: bytes) -> bytes:
    # HKDF-Extract with the label as salt (§4.1) is HMAC(salt, ikm).
    return hmac.new(b"mu:file-key:v2", file_key, hashlib.sha256).digest()


def derive(file_key: bytes, kind: int, level: int, index: int) -> tuple[bytes, bytes]:
    ctx = struct.pack(">BBQ", kind, level, index)
    key = HKDFExpand(hashes.SHA256(), 32, b"mu:chunk-key:v2" + ctx).derive(prk(file_key))
    nonce = HKDFExpand(hashes.SHA256(), 32, b"mu:chunk-nonce:v2" + ctx).derive(prk(file_key))[:12]
    return key, nonce


def seal(file_key: bytes, plain: bytes, kind: int, level: int, index: int, aad: bytes | None = None) -> bytes:
    key, nonce = derive(file_key, kind, level, index)
    return AESGCM(key).encrypt(nonce, plain, aad)


def b58(raw: bytes) -> str:
    # Bitcoin alphabet; each leading zero byte is one "1" (§7).
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def mp_str(s: str) -> bytes:
    b = s.encode()
    return (bytes([0xA0 | len(b)]) if len(b) < 32 else bytes([0xD9, len(b)])) + b


def mp_uint(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    for tag, fmt, top in ((0xCC, ">B", 0xFF), (0xCD, ">H", 0xFFFF), (0xCE, ">I", 0xFFFFFFFF)):
        if n <= top:
            return bytes([tag]) + struct.pack(fmt, n)
    return b"\xcf" + struct.pack(">Q", n)


def root_private(size: int, chunk_size: int, name: str | None, media_type: str | None) -> bytes:
    items = [("v", mp_uint(VERSION)), ("size", mp_uint(size)), ("chunk_size", mp_uint(chunk_size))]
    if name is not None:
        items.append(("name", mp_str(name)))
    if media_type is not None:
        items.append(("type", mp_str(media_type)))
    return bytes([0x80 | len(items)]) + b"".join(mp_str(k) + v for k, v in items)


def prefix(kind: int, level: int, children: list[bytes]) -> bytes:
    return struct.pack(">BBBBI", VERSION, kind, level, 0, len(children)) + b"".join(children)


def encode(data: bytes, chunk_size: int, fanout: int, name: str | None, media_type: str | None):
    """Return (root, [(address, chunk, kind)] in emit order) following §6.3 on whole lists."""
    out: list[tuple[bytes, bytes, int]] = []
    level_list = []
    for i in range(0, len(data), chunk_size):
        chunk = seal(FILE_KEY, data[i:i + chunk_size], KIND_DATA, 0, i // chunk_size)
        out.append((hashlib.sha256(chunk).digest(), chunk, KIND_DATA))
        level_list.append(out[-1][0])
    depth = 0
    while len(level_list) > fanout:
        depth += 1
        upper = []
        for n, start in enumerate(range(0, len(level_list), fanout)):
            group = level_list[start:start + fanout]
            clear = prefix(KIND_INDEX, depth, group)
            chunk = clear + seal(FILE_KEY, b"", KIND_INDEX, depth, n, clear)
            out.append((hashlib.sha256(chunk).digest(), chunk, KIND_INDEX))
            upper.append(out[-1][0])
        level_list = upper
    clear = prefix(KIND_ROOT, depth, level_list)
    private = root_private(len(data), chunk_size, name, media_type)
    chunk = clear + seal(FILE_KEY, private, KIND_ROOT, 0, 0, clear)
    root = hashlib.sha256(chunk).digest()
    out.append((root, chunk, KIND_ROOT))
    return root, out, private


# -- format 3 (§4.4, §5.2, §6.6) --------------------------------------------

SPEC = Path(__file__).resolve().parents[1] / "specs" / "chunks.md"
M64 = (1 << 64) - 1
CDC = {"min": 256 * 1024, "avg": 1024 * 1024, "max": 4 * 1024 * 1024, "nc": 2}


def spec_tables() -> tuple[list[int], dict[int, int]]:
    """GEAR and MASKS as written in §A of specs/chunks.md."""
    appendix = SPEC.read_text().split("## A. Gear table and masks")[1]
    gear = [int(h, 16) for row in re.findall(r"^\s*\d+: (.*)$", appendix, re.M) for h in row.split()]
    masks = {int(i): int(h, 16) for i, h in re.findall(r"^MASKS\[\s*(\d+)\] = ([0-9a-f]{16})$", appendix, re.M)}
    assert len(gear) == 256 and len(masks) == 21
    return gear, masks


def cdc_cut(buf: bytes, start: int, gear: list[int], mask_s: int, mask_l: int) -> int:
    """Length of the chunk starting at ``start`` (§5.2 ``cut``, line by line)."""
    n = len(buf) - start
    if n <= CDC["min"]:
        return n
    center = CDC["avg"]
    if n > CDC["max"]:
        n = CDC["max"]
    elif n < center:
        center = n
    h = 0
    i = (CDC["min"] // 2) * 2
    for stop, mask in (((center // 2) * 2, mask_s), ((n // 2) * 2, mask_l)):
        while i < stop:
            h = ((h << 2) + (gear[buf[start + i]] << 1)) & M64
            if h & ((mask << 1) & M64) == 0:
                return i
            h = (h + gear[buf[start + i + 1]]) & M64
            if h & mask == 0:
                return i + 1
            i += 2
    return n


def cdc_lengths(buf: bytes) -> list[int]:
    gear, masks = spec_tables()
    bits = CDC["avg"].bit_length() - 1
    mask_s, mask_l = masks[bits + CDC["nc"]], masks[bits - CDC["nc"]]
    lengths, pos = [], 0
    while pos < len(buf):
        lengths.append(cdc_cut(buf, pos, gear, mask_s, mask_l))
        pos += lengths[-1]
    return lengths


def counter_stream(size: int) -> bytes:
    """§12's pseudo-random input: SHA-256("mu:cdc-vector" || 64-bit counter), concatenated."""
    blocks = (hashlib.sha256(b"mu:cdc-vector" + struct.pack(">Q", i)).digest() for i in range(-(-size // 32)))
    return b"".join(blocks)[:size]


def v3_root_key(link_key: bytes) -> bytes:
    salt_prk = hmac.new(b"mu:file-key:v3", link_key, hashlib.sha256).digest()
    ctx = struct.pack(">BBQ", KIND_ROOT, 0, 0)
    return HKDFExpand(hashes.SHA256(), 32, b"mu:chunk-key:v3" + ctx).derive(salt_prk)


def v3_positional(link_key: bytes, kind: int, level: int, index: int) -> bytes:
    salt_prk = hmac.new(b"mu:file-key:v3", link_key, hashlib.sha256).digest()
    ctx = struct.pack(">BBQ", kind, level, index)
    return HKDFExpand(hashes.SHA256(), 32, b"mu:chunk-key:v3" + ctx).derive(salt_prk)


def v3_map(size: int, name: str | None, media_type: str | None) -> bytes:
    items = [("v", mp_uint(3)), ("size", mp_uint(size)), ("cdc_min", mp_uint(CDC["min"])),
             ("cdc_avg", mp_uint(CDC["avg"])), ("cdc_max", mp_uint(CDC["max"])), ("cdc_nc", mp_uint(CDC["nc"]))]
    if name is not None:
        items.append(("name", mp_str(name)))
    if media_type is not None:
        items.append(("type", mp_str(media_type)))
    return bytes([0x80 | len(items)]) + b"".join(mp_str(k) + v for k, v in items)


def v3_encode(data: bytes, fanout: int, name: str | None, media_type: str | None, *,
              link_key: bytes | None = None, secret: bytes | None = None):
    """Format 3 on whole lists (§6.3, §6.6); return (root, link_key, [(address, chunk, kind)] in emit order)."""
    zero = bytes(12)
    out: list[tuple[bytes, bytes, int]] = []

    def hm(label: bytes, material: bytes) -> bytes:
        assert secret is not None
        return hmac.new(secret, label + hashlib.sha256(material).digest(), hashlib.sha256).digest()

    level: list[tuple[bytes, int, bytes]] = []  # (address, length, key)
    pos = 0
    for i, n in enumerate(cdc_lengths(data)):
        plain = data[pos:pos + n]
        pos += n
        key = hm(b"mu:convergent-data:v3", plain) if secret else v3_positional(link_key, KIND_DATA, 0, i)
        chunk = AESGCM(key).encrypt(zero, plain, None)
        out.append((hashlib.sha256(chunk).digest(), chunk, KIND_DATA))
        level.append((out[-1][0], n, key))
    depth = 0

    def clear_and_entries(kind: int, lvl: int, group: list[tuple[bytes, int, bytes]]) -> tuple[bytes, bytes]:
        clear = struct.pack(">BBBBI", 3, kind, lvl, 0, len(group)) + b"".join(a for a, _, _ in group)
        return clear, b"".join(struct.pack(">Q", n) + k for _, n, k in group)

    while len(level) > fanout:
        depth += 1
        upper = []
        for n, start in enumerate(range(0, len(level), fanout)):
            group = level[start:start + fanout]
            clear, entries = clear_and_entries(KIND_INDEX, depth, group)
            key = hm(b"mu:convergent-node:v3", clear + entries) if secret else v3_positional(link_key, KIND_INDEX, depth, n)
            chunk = clear + AESGCM(key).encrypt(zero, entries, clear)
            out.append((hashlib.sha256(chunk).digest(), chunk, KIND_INDEX))
            upper.append((out[-1][0], sum(n for _, n, _ in group), key))
        level = upper
    clear, entries = clear_and_entries(KIND_ROOT, depth, level)
    private = entries + v3_map(len(data), name, media_type)
    if secret:
        link_key = hm(b"mu:convergent-file:v3", clear + private)
    chunk = clear + AESGCM(v3_root_key(link_key)).encrypt(zero, private, clear)
    root = hashlib.sha256(chunk).digest()
    out.append((root, chunk, KIND_ROOT))
    return root, link_key, out


def v3_walk(root: bytes, chunks: list[tuple[bytes, bytes, int]]) -> list[bytes]:
    by_address = {a: (c, k) for a, c, k in chunks}

    def walk(address: bytes) -> list[bytes]:
        chunk, kind = by_address[address]
        if kind == KIND_DATA:
            return [address]
        count = struct.unpack_from(">I", chunk, 4)[0]
        return [address] + [a for i in range(count) for a in walk(chunk[8 + 32 * i:40 + 32 * i])]

    return walk(root)


def format3_vectors() -> dict[str, object]:
    text = "hello, mu\n"
    root, link_key, chunks = v3_encode(text.encode(), (1048576 - 2048) // 72, "hello.txt", "text/plain",
                                       link_key=FILE_KEY)
    size = 6 * 1024 * 1024 + 5
    data = counter_stream(size)
    secret = b"\x22" * 32
    troot, tkey, tchunks = v3_encode(data, 2, None, None, secret=secret)
    return {
        "cut": {
            "random_size": size,
            "random_lengths": cdc_lengths(data),
            "zeros_size": 9 * 1024 * 1024,
            "zeros_lengths": cdc_lengths(bytes(9 * 1024 * 1024)),
        },
        "file": {
            "plaintext_utf8": text,
            "link_key": FILE_KEY.hex(),
            "name": "hello.txt",
            "media_type": "text/plain",
            "root_key": v3_root_key(FILE_KEY).hex(),
            "chunks": [[a.hex(), c.hex()] for a, c, _ in chunks],
            "link": f"mu:{b58(root)}#{b58(FILE_KEY)}",
        },
        "convergent_tree": {
            "plaintext": "the random input of 'cut'",
            "chunk_secret": secret.hex(),
            "fanout": 2,
            "root": troot.hex(),
            "link": f"mu:{b58(troot)}#{b58(tkey)}",
            "walk_order": [a.hex() for a in v3_walk(troot, tchunks)],
            "manifest_chunks": {a.hex(): c.hex() for a, c, k in tchunks if k != KIND_DATA},
        },
    }


def main() -> None:
    key0, nonce0 = derive(FILE_KEY, KIND_DATA, 0, 0)
    text = "hello, mu\n"
    root, chunks, private = encode(text.encode(), 65536, (65536 - 2048) // 32, "hello.txt", "text/plain")
    secret = b"\x11" * 32
    name, mtype = b"hello.txt", b"text/plain"
    params = (struct.pack(">II", 65536, (65536 - 2048) // 32) + struct.pack(">H", len(name)) + name
              + struct.pack(">H", len(mtype)) + mtype)
    conv = hmac.new(secret, b"mu:convergent-key:v2" + params + struct.pack(">Q", len(text))
                    + hashlib.sha256(text.encode()).digest(), hashlib.sha256).digest()
    tree_size = 4 * 65536 + 5
    tree_plain = bytes(i % 251 for i in range(tree_size))
    troot, tchunks, _ = encode(tree_plain, 65536, 2, None, None)
    by_address = {a: (c, k) for a, c, k in tchunks}

    def walk(address: bytes) -> list[bytes]:
        # §6.4 order: a manifest chunk, then each child's subtree, left to right.
        chunk, kind = by_address[address]
        if kind == KIND_DATA:
            return [address]
        count = struct.unpack_from(">I", chunk, 4)[0]
        children = [chunk[8 + 32 * i:40 + 32 * i] for i in range(count)]
        return [address] + [a for child in children for a in walk(child)]

    vectors = {
        "_source": "mu specs/chunks.md §12, formats 2 and 3; generated by scripts/vectors_chunks.py, an implementation "
                   "independent of protocol.chunks (cryptography's HKDF/AES-GCM, hand-packed msgpack); frozen",
        "file_key": FILE_KEY.hex(),
        "data_chunk_0": {"key": key0.hex(), "nonce": nonce0.hex()},
        "file": {
            "plaintext_utf8": text,
            "chunk_size": 65536,
            "name": "hello.txt",
            "media_type": "text/plain",
            "chunks": [[a.hex(), c.hex()] for a, c, _ in chunks],
            "root_private": private.hex(),
            "link": f"mu:{b58(root)}#{b58(FILE_KEY)}",
        },
        "tree": {
            "plaintext": "byte i is i mod 251",
            "size": tree_size,
            "chunk_size": 65536,
            "fanout": 2,
            "root": troot.hex(),
            "walk_order": [a.hex() for a in walk(troot)],
            "manifest_chunks": {a.hex(): c.hex() for a, c, k in tchunks if k != KIND_DATA},
        },
        "convergent": {"secret": secret.hex(), "file_key": conv.hex()},
        "v3": format3_vectors(),
    }
    json.dump(vectors, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

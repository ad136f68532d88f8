"""Regenerate tests/vectors/chunks.json from specs/chunks.md alone (format 2).

A second, independent implementation of the chunk format, written from the
spec: it uses neither ``protocol/`` nor pycryptodome nor msgpack, but the
``cryptography`` package's HKDF and AES-GCM and hand-packed MessagePack, so
the frozen vectors do not merely echo the code they test. ``cryptography``
is not a project dependency: run this with any Python that has it, e.g.
``python3 scripts/vectors_chunks.py > tests/vectors/chunks.json``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import sys

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
        "_source": "mu specs/chunks.md §12, format 2; generated by scripts/vectors_chunks.py, an implementation "
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
    }
    json.dump(vectors, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

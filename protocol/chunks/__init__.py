"""Encrypted, content-addressed chunks, manifests and links (specs/chunks.md).

Pure: bytes in, values out. The node's store and the network move the
chunks; this package decides what the bytes are.
"""

from ._crypto import (
    ADDRESS_SIZE,
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    ChunkSealer,
    ConvergentKeyHasher,
    chunk_address,
)
from ._decoder import DataSlot, FileDecoder
from ._encoder import FileEncoder, check_fanout
from ._errors import ChunkError, IntegrityError, LinkError, LocalChunkError
from ._link import Link, parse_key
from ._walker import RawWalker
from ._manifest import (
    DEFAULT_CHUNK_SIZE,
    FORMAT_VERSION,
    MAX_CHUNK_SIZE,
    MAX_DEPTH,
    MAX_FANOUT,
    MAX_MEDIA_TYPE_BYTES,
    MAX_NAME_BYTES,
    MIN_CHUNK_SIZE,
    RootRecord,
    check_chunk_size,
    max_fanout,
)

__all__ = [
    "ADDRESS_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "KEY_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_DEPTH",
    "MAX_FANOUT",
    "MAX_MEDIA_TYPE_BYTES",
    "MAX_NAME_BYTES",
    "MIN_CHUNK_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "ChunkError",
    "ChunkSealer",
    "ConvergentKeyHasher",
    "DataSlot",
    "FileDecoder",
    "FileEncoder",
    "IntegrityError",
    "Link",
    "LinkError",
    "LocalChunkError",
    "RawWalker",
    "RootRecord",
    "check_chunk_size",
    "check_fanout",
    "chunk_address",
    "max_fanout",
    "parse_key",
]

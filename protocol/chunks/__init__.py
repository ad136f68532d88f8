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
from ._cdc import CDC_AVG, CDC_MAX, CDC_MIN, CDC_NORMALIZATION, DEFAULT_CDC, CdcParams, Chunker
from ._decoder import DataSlot, FileDecoder
from ._encoder import FileEncoder, check_fanout
from ._encoder3 import CdcFileEncoder, SealedData, check_fanout_v3
from ._keys3 import CHUNK_SECRET_SIZE, chunk_secret_for_add
from ._manifest3 import RootRecordV3
from ._errors import ChunkError, IntegrityError, LinkError, LocalChunkError
from ._link import Link, parse_key
from ._walker import RawWalker
from ._manifest import (
    DEFAULT_CHUNK_SIZE,
    FORMAT_V3,
    FORMAT_VERSION,
    MAX_CHUNK_SIZE,
    MAX_DEPTH,
    MAX_FANOUT,
    MAX_FANOUT_V3,
    MAX_MEDIA_TYPE_BYTES,
    MAX_NAME_BYTES,
    MIN_CHUNK_SIZE,
    RootRecord,
    check_chunk_size,
    max_fanout,
)

__all__ = [
    "ADDRESS_SIZE",
    "CDC_AVG",
    "CDC_MAX",
    "CDC_MIN",
    "CDC_NORMALIZATION",
    "CHUNK_SECRET_SIZE",
    "DEFAULT_CDC",
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_V3",
    "FORMAT_VERSION",
    "KEY_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_DEPTH",
    "MAX_FANOUT",
    "MAX_FANOUT_V3",
    "MAX_MEDIA_TYPE_BYTES",
    "MAX_NAME_BYTES",
    "MIN_CHUNK_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "CdcFileEncoder",
    "CdcParams",
    "ChunkError",
    "Chunker",
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
    "RootRecordV3",
    "SealedData",
    "check_chunk_size",
    "check_fanout",
    "check_fanout_v3",
    "chunk_address",
    "chunk_secret_for_add",
    "max_fanout",
    "parse_key",
]

"""Encrypted, content-addressed chunks, manifests and links (specs/chunks.md).

Pure: bytes in, values out. The node's store and the network move the
chunks; this package decides what the bytes are.

Loaded lazily (PEP 562): a name is imported from its module when first
used, so a caller that needs only ``Link`` or the sizes (the ``mu`` command
parsing its arguments) does not load the codecs, the AEAD and FastCDC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._sizes import (ADDRESS_SIZE, CDC_AVG, CDC_MAX, CDC_MIN, CDC_NORMALIZATION, DEFAULT_CHUNK_SIZE, KEY_SIZE,
                         MAX_CHUNK_SIZE, MAX_SEALED_SIZE, MIN_CHUNK_SIZE, NONCE_SIZE, TAG_SIZE)
    from ._crypto import ChunkSealer, ConvergentKeyHasher, chunk_address
    from ._cdc import CdcParams, Chunker, DEFAULT_CDC
    from ._decoder import DataSlot, FileDecoder
    from ._encoder import FileEncoder, check_fanout
    from ._encoder3 import CdcFileEncoder, SealedData, check_fanout_v3
    from ._keys3 import CHUNK_SECRET_SIZE, chunk_secret_for_add
    from ._manifest3 import RootRecordV3
    from ._errors import ChunkError, IntegrityError, LinkError, LocalChunkError
    from ._link import Link, parse_key
    from ._walker import RawWalker
    from ._manifest import (FORMAT_V3, FORMAT_VERSION, MAX_DEPTH, MAX_FANOUT, MAX_FANOUT_V3, MAX_MEDIA_TYPE_BYTES,
                            MAX_NAME_BYTES, RootRecord, check_chunk_size, max_fanout)

# Each exported name and the module that defines it.
_HOME = {
    "ADDRESS_SIZE": "._sizes",
    "CDC_AVG": "._sizes",
    "CDC_MAX": "._sizes",
    "CDC_MIN": "._sizes",
    "CDC_NORMALIZATION": "._sizes",
    "CHUNK_SECRET_SIZE": "._keys3",
    "DEFAULT_CDC": "._cdc",
    "DEFAULT_CHUNK_SIZE": "._sizes",
    "FORMAT_V3": "._manifest",
    "FORMAT_VERSION": "._manifest",
    "KEY_SIZE": "._sizes",
    "MAX_CHUNK_SIZE": "._sizes",
    "MAX_SEALED_SIZE": "._sizes",
    "MAX_DEPTH": "._manifest",
    "MAX_FANOUT": "._manifest",
    "MAX_FANOUT_V3": "._manifest",
    "MAX_MEDIA_TYPE_BYTES": "._manifest",
    "MAX_NAME_BYTES": "._manifest",
    "MIN_CHUNK_SIZE": "._sizes",
    "NONCE_SIZE": "._sizes",
    "TAG_SIZE": "._sizes",
    "CdcFileEncoder": "._encoder3",
    "CdcParams": "._cdc",
    "ChunkError": "._errors",
    "Chunker": "._cdc",
    "ChunkSealer": "._crypto",
    "ConvergentKeyHasher": "._crypto",
    "DataSlot": "._decoder",
    "FileDecoder": "._decoder",
    "FileEncoder": "._encoder",
    "IntegrityError": "._errors",
    "Link": "._link",
    "LinkError": "._errors",
    "LocalChunkError": "._errors",
    "RawWalker": "._walker",
    "RootRecord": "._manifest",
    "RootRecordV3": "._manifest3",
    "SealedData": "._encoder3",
    "check_chunk_size": "._manifest",
    "check_fanout": "._encoder",
    "check_fanout_v3": "._encoder3",
    "chunk_address": "._crypto",
    "chunk_secret_for_add": "._keys3",
    "max_fanout": "._manifest",
    "parse_key": "._link",
}

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
    "MAX_SEALED_SIZE",
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


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

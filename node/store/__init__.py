"""The node's chunk store on disk (specs/chunks.md §8)."""

from ._errors import ChunkCorrupt, ChunkMismatch, ChunkNotFound, StoreError, StoreFull
from ._index import INDEX_FILE, SCHEMA_VERSION, ChunkIndex, migrate_schema
from ._rebuild import RECOVERED_GRACE_SECONDS, STALE_TEMP_SECONDS, RebuildReport
from ._store import ChunkStore
from ._writer import FSYNC_PARALLELISM, MAX_CHUNK_BYTES
from .retention import GC_BATCH, MAX_PINNED_ROOTS, ChunkMeta

STORE_DIR = "chunks"

__all__ = [
    "FSYNC_PARALLELISM",
    "GC_BATCH",
    "MAX_PINNED_ROOTS",
    "RECOVERED_GRACE_SECONDS",
    "ChunkMeta",
    "INDEX_FILE",
    "MAX_CHUNK_BYTES",
    "SCHEMA_VERSION",
    "STALE_TEMP_SECONDS",
    "STORE_DIR",
    "ChunkCorrupt",
    "ChunkIndex",
    "ChunkMismatch",
    "ChunkNotFound",
    "ChunkStore",
    "RebuildReport",
    "StoreError",
    "StoreFull",
    "migrate_schema",
]

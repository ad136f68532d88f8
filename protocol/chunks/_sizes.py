"""The sizes of specs/chunks.md, with nothing to import: the CLI reads them without loading the codecs.

``_crypto``, ``_cdc`` and ``_manifest`` use them from here; the package
exports them as before.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# §4 Key derivation, §5 Chunks: AES-256-GCM keys, nonces and tags; SHA-256 addresses.
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
ADDRESS_SIZE = 32

# Sizes of format-3 data chunks (§3 Definitions): no chunk is shorter than
# CDC_MIN except the last, none longer than CDC_MAX.
CDC_MIN = 256 * KiB
CDC_AVG = 1 * MiB
CDC_MAX = 4 * MiB
# Normalized chunking level (FastCDC §3.5): masks of log2(avg) +/- 2 bits.
CDC_NORMALIZATION = 2
# The chunker gathers this many times max_size before it cuts (§8.5 Bounds: CDC_HOLD).
CDC_HOLD_FACTOR = 2

# Fixed-size data chunks of format 2 (§6.1): a power of two in this range.
MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024

# The longest chunk a file's encoding makes (§5 Chunks): 4 MiB of plaintext
# (a format-2 chunk of the largest size, a format-3 chunk cut at CDC_MAX)
# sealed with its tag.  The wire's MAX_DATA_SIZE and an erasure stripe's
# block size allow it.
MAX_SEALED_SIZE = max(MAX_CHUNK_SIZE, CDC_MAX) + TAG_SIZE

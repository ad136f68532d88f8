"""The Noise XX handshake as a pure state machine (Noise rev 34, section 7.5).

    XX:
      -> e
      <- e, ee, s, es
      -> s, se

Both static and ephemeral private keys are passed in by the caller, so
the object draws no randomness and can be replayed against published test
vectors.  After the third message ``split()`` returns the transport
CipherStates oriented for this side (send, receive).
"""

from __future__ import annotations

from protocol.noise._symmetric import (
    DHLEN,
    TAG_SIZE,
    CipherState,
    NoiseError,
    SymmetricState,
    x25519,
    x25519_public_key,
)

PROTOCOL_NAME = b"Noise_XX_25519_AESGCM_SHA256"
# Spec section 3: every Noise message, handshake ones included, is at most 65535 bytes.
MAX_HANDSHAKE_MESSAGE = 65535

# The token lists of the XX pattern, one per handshake message.
_XX_PATTERN: tuple[tuple[str, ...], ...] = (
    ("e",),
    ("e", "ee", "s", "es"),
    ("s", "se"),
)


class XXHandshake:
    """One side of a Noise_XX_25519_AESGCM_SHA256 handshake.

    Args:
        initiator: True for the side that sends the first message.
        static_key: this side's 32-byte X25519 static private key.
        ephemeral_key: a fresh 32-byte X25519 private key for this handshake
            only; never reuse one.
        prologue: bytes both sides must agree on (spec section 6).

    Raises NoiseError from ``read_message`` on any malformed or
    unauthenticated message; the object is then dead and must be dropped.
    """

    __slots__ = ("_initiator", "_s", "_s_pub", "_e", "_e_pub", "_rs", "_re", "_sym", "_step", "_failed")

    def __init__(self, *, initiator: bool, static_key: bytes, ephemeral_key: bytes, prologue: bytes) -> None:
        self._initiator = initiator
        self._s = bytes(static_key)
        self._s_pub = x25519_public_key(self._s)
        self._e = bytes(ephemeral_key)
        self._e_pub = x25519_public_key(self._e)
        self._rs: bytes | None = None
        self._re: bytes | None = None
        self._sym = SymmetricState(PROTOCOL_NAME)
        self._sym.mix_hash(prologue)
        self._step = 0
        self._failed = False

    @property
    def complete(self) -> bool:
        return self._step == len(_XX_PATTERN)

    @property
    def remote_static(self) -> bytes | None:
        """The peer's X25519 static public key once its ``s`` token arrived."""
        return self._rs

    @property
    def local_static(self) -> bytes:
        return self._s_pub

    @property
    def handshake_hash(self) -> bytes:
        return self._sym.handshake_hash

    def _my_turn(self) -> bool:
        # Message 0 and 2 are the initiator's, message 1 the responder's.
        return (self._step % 2 == 0) == self._initiator

    def _check(self, writing: bool) -> None:
        if self._failed:
            raise NoiseError("handshake already failed")
        if self.complete:
            raise NoiseError("handshake already complete")
        if self._my_turn() != writing:
            raise NoiseError("not this side's turn in the handshake")

    def _dh_token(self, token: str) -> None:
        if token == "ee":
            assert self._re is not None
            self._sym.mix_key(x25519(self._e, self._re))
        elif token == "es":
            # Initiator's ephemeral with responder's static (spec section 5.3).
            if self._initiator:
                assert self._rs is not None
                self._sym.mix_key(x25519(self._e, self._rs))
            else:
                assert self._re is not None
                self._sym.mix_key(x25519(self._s, self._re))
        elif token == "se":
            if self._initiator:
                assert self._re is not None
                self._sym.mix_key(x25519(self._s, self._re))
            else:
                assert self._rs is not None
                self._sym.mix_key(x25519(self._e, self._rs))

    def message_size(self, payload_size: int) -> int:
        """Size in bytes of the next handshake message carrying ``payload_size`` bytes."""
        size = 0
        keyed = self._sym.has_key
        for token in _XX_PATTERN[self._step]:
            if token == "e":
                size += DHLEN
            elif token == "s":
                size += DHLEN + (TAG_SIZE if keyed else 0)
            else:
                keyed = True
        return size + payload_size + (TAG_SIZE if keyed else 0)

    def write_message(self, payload: bytes) -> bytes:
        """Spec section 5.3 WriteMessage(): return the next handshake message."""
        self._check(writing=True)
        out = bytearray()
        for token in _XX_PATTERN[self._step]:
            if token == "e":
                out += self._e_pub
                self._sym.mix_hash(self._e_pub)
            elif token == "s":
                out += self._sym.encrypt_and_hash(self._s_pub)
            else:
                self._dh_token(token)
        out += self._sym.encrypt_and_hash(payload)
        self._step += 1
        if len(out) > MAX_HANDSHAKE_MESSAGE:
            raise NoiseError("handshake message exceeds 65535 bytes")
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Spec section 5.3 ReadMessage(): process a peer message, return its payload."""
        self._check(writing=False)
        try:
            return self._read(bytes(message))
        except NoiseError:
            self._failed = True
            raise

    def _read(self, message: bytes) -> bytes:
        if len(message) > MAX_HANDSHAKE_MESSAGE:
            raise NoiseError("handshake message exceeds 65535 bytes")
        pos = 0
        for token in _XX_PATTERN[self._step]:
            if token == "e":
                if len(message) - pos < DHLEN:
                    raise NoiseError("handshake message too short for e")
                self._re = message[pos : pos + DHLEN]
                pos += DHLEN
                self._sym.mix_hash(self._re)
            elif token == "s":
                size = DHLEN + (TAG_SIZE if self._sym.has_key else 0)
                if len(message) - pos < size:
                    raise NoiseError("handshake message too short for s")
                self._rs = self._sym.decrypt_and_hash(message[pos : pos + size])
                pos += size
            else:
                self._dh_token(token)
        if self._sym.has_key and len(message) - pos < TAG_SIZE:
            raise NoiseError("handshake payload shorter than the tag")
        payload = self._sym.decrypt_and_hash(message[pos:])
        self._step += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """Spec section 5.2 Split(), oriented as (send, receive) for this side."""
        if not self.complete:
            raise NoiseError("handshake not complete")
        first, second = self._sym.split()
        # The initiator sends with the first CipherState (spec section 5.3).
        return (first, second) if self._initiator else (second, first)

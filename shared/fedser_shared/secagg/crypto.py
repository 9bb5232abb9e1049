"""The cryptographic primitives of secure aggregation, each a thin call into a maintained library.

`cryptography`: X25519 key agreement, HKDF-SHA256, AES-256-GCM for shares, AES-256-CTR as the
mask generator. pycryptodome: Shamir secret sharing over GF(2^128), which takes 16-byte secrets,
so a 32-byte secret is shared as two independent 16-byte halves under the same share index.
Nothing here invents a primitive; docs/protocol.md gives the byte layouts for other languages.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from fedser_shared.errors import MalformedShareError

RandomBytes = Callable[[int], bytes]

PROTOCOL_LABEL = b"fedser-secagg/1"
KEY_BYTES = 32
SECRET_BYTES = 32
HALF_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
SHARE_BYTES = 4 + 2 * HALF_BYTES  # share index (u32, big-endian) || first half || second half
SHARE_PLAINTEXT_BYTES = 2 * SHARE_BYTES  # the mask key's share, then the self-mask seed's share
SHARE_CIPHERTEXT_BYTES = NONCE_BYTES + SHARE_PLAINTEXT_BYTES + TAG_BYTES


@dataclass(frozen=True)
class Share:
    """One Shamir share of a 32-byte secret: its index (1-based) and its two 16-byte halves."""

    index: int
    first: bytes
    second: bytes

    def to_bytes(self) -> bytes:
        return struct.pack(">I", self.index) + self.first + self.second

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) != SHARE_BYTES:
            raise MalformedShareError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        (index,) = struct.unpack(">I", data[:4])
        if index < 1:
            raise MalformedShareError(f"share index must be at least 1, got {index}")
        return cls(index, bytes(data[4 : 4 + HALF_BYTES]), bytes(data[4 + HALF_BYTES :]))


def new_private_key(random_bytes: RandomBytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(random_bytes(KEY_BYTES))


def load_private(data: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(data)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def load_public(data: bytes, what: str) -> X25519PublicKey:
    if len(data) != KEY_BYTES:
        raise MalformedShareError(f"{what} must be a {KEY_BYTES}-byte X25519 public key, got {len(data)} bytes")
    return X25519PublicKey.from_public_bytes(data)


def agreed_key(own: X25519PrivateKey, peer: bytes, purpose: bytes, context: bytes) -> bytes:
    """HKDF-SHA256 of the X25519 shared secret, bound to its purpose and the round's context."""
    try:
        shared = own.exchange(load_public(peer, "a peer's public key"))
    except ValueError as error:  # a low-order point gives an all-zero secret
        raise MalformedShareError(f"key agreement failed: {error}") from error
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=PROTOCOL_LABEL + b" " + purpose + b" " + context).derive(shared)


def _share_aad(context: bytes, sender: int, recipient: int) -> bytes:
    return PROTOCOL_LABEL + b" share " + context + struct.pack(">II", sender, recipient)


def encrypt_shares(key: bytes, context: bytes, sender: int, recipient: int, mask_key_share: Share, seed_share: Share,
                   random_bytes: RandomBytes) -> bytes:
    nonce = random_bytes(NONCE_BYTES)
    plaintext = mask_key_share.to_bytes() + seed_share.to_bytes()
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _share_aad(context, sender, recipient))


def decrypt_shares(key: bytes, context: bytes, sender: int, recipient: int, ciphertext: bytes) -> tuple[Share, Share]:
    if len(ciphertext) != SHARE_CIPHERTEXT_BYTES:
        raise MalformedShareError(f"encrypted share from node {sender} is {len(ciphertext)} bytes, expected {SHARE_CIPHERTEXT_BYTES}")
    try:
        plaintext = AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], _share_aad(context, sender, recipient))
    except InvalidTag as error:
        raise MalformedShareError(f"encrypted share from node {sender} does not authenticate") from error
    return Share.from_bytes(plaintext[:SHARE_BYTES]), Share.from_bytes(plaintext[SHARE_BYTES:])


def split_secret(secret: bytes, threshold: int, count: int) -> list[Share]:
    """`count` shares (indexes 1..count), any `threshold` of which give the secret back."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secrets are {SECRET_BYTES} bytes")
    firsts = Shamir.split(threshold, count, secret[:HALF_BYTES])
    seconds = Shamir.split(threshold, count, secret[HALF_BYTES:])
    return [Share(i, a, b) for (i, a), (_, b) in zip(firsts, seconds, strict=True)]


def combine_secret(shares: Sequence[Share]) -> bytes:
    indexes = [s.index for s in shares]
    if len(set(indexes)) != len(indexes):
        raise MalformedShareError("shares with the same index cannot be combined")
    first = Shamir.combine([(s.index, s.first) for s in shares])
    second = Shamir.combine([(s.index, s.second) for s in shares])
    return bytes(first) + bytes(second)


def _keystream(seed: bytes) -> CipherContext:
    return Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()


def mask(seed: bytes, length: int) -> np.ndarray:
    """The PRG: AES-256-CTR keystream under `seed` (counter block 0), read as little-endian uint32."""
    return np.frombuffer(_keystream(seed).update(bytes(4 * length)), dtype="<u4")


_BLOCK_WORDS = 1 << 14  # the keystream is made and added 64 KiB at a time, while it is still in cache
_ZEROS = memoryview(bytes(4 * _BLOCK_WORDS))


def apply_mask(total: np.ndarray, seed: bytes, subtract: bool = False) -> None:
    """total += mask(seed, len(total)) mod 2^32 (or -=), in place: the same keystream, made block by
    block into one small buffer and added from there (no vector-sized temporary)."""
    keystream = _keystream(seed)
    buffer = bytearray(4 * _BLOCK_WORDS + 15)  # update_into wants a block's slack
    combine = np.subtract if subtract else np.add
    for start in range(0, len(total), _BLOCK_WORDS):
        part = total[start : start + _BLOCK_WORDS]
        keystream.update_into(_ZEROS[: 4 * len(part)], buffer)
        combine(part, np.frombuffer(buffer, dtype="<u4", count=len(part)), out=part)

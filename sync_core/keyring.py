"""AES-256-GCM encryption at rest for token caches, with key ids so keys can rotate.

Setting ``TOKEN_ENCRYPTION_KEYS`` = ``kid:base64key[,kid:base64key...]``: the first key encrypts, every key
decrypts. A sealed blob is ``b"EK1" | len(kid) | kid | nonce(12) | ciphertext+tag``; the caller's associated
data (e.g. the connection id) binds a blob to its owner, so blobs cannot be swapped between connections.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"EK1"
NONCE_BYTES = 12


class KeyringError(ValueError):
    """A malformed key setting or a blob that cannot be opened with any known key."""


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, bytes]
    current: str

    @classmethod
    def from_setting(cls, value: str, setting: str = "TOKEN_ENCRYPTION_KEYS") -> Keyring:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            kid, sep, b64 = part.partition(":")
            if not sep or not kid or len(kid) > 64:
                raise KeyringError(f"{setting}: each entry must be 'kid:base64key'")
            try:
                key = base64.b64decode(b64, validate=True)
            except binascii.Error:
                raise KeyringError(f"{setting}: key '{kid}' is not valid base64") from None
            if len(key) != 32:
                raise KeyringError(f"{setting}: key '{kid}' must be 32 bytes (AES-256), got {len(key)}")
            keys[kid] = key
            order.append(kid)
        if not order:
            raise KeyringError(f"{setting}: no key configured")
        return cls(keys=keys, current=order[0])

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        kid = self.current.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current]).encrypt(nonce, plaintext, associated_data)
        return MAGIC + bytes([len(kid)]) + kid + nonce + sealed

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 1:
            raise KeyringError("not a sealed token cache")
        kid_len = blob[len(MAGIC)]
        start = len(MAGIC) + 1
        kid = blob[start : start + kid_len].decode(errors="replace")
        nonce = blob[start + kid_len : start + kid_len + NONCE_BYTES]
        key = self.keys.get(kid)
        if key is None:
            raise KeyringError(f"sealed with key '{kid}', which is not configured")
        try:
            return AESGCM(key).decrypt(nonce, blob[start + kid_len + NONCE_BYTES :], associated_data)
        except InvalidTag:
            raise KeyringError("token cache failed authentication (wrong key or owner, or tampered)") from None

    def needs_reseal(self, blob: bytes) -> bool:
        """True when the blob was sealed with an older key (re-seal it on the next write)."""
        kid_len = blob[len(MAGIC)] if len(blob) > len(MAGIC) else 0
        return blob[len(MAGIC) + 1 : len(MAGIC) + 1 + kid_len] != self.current.encode()

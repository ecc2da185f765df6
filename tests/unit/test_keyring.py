"""Token caches sealed with AES-GCM: round trip, rotation, and refusal of anything tampered or misplaced."""

import base64
import os

import pytest

from sync_core.keyring import Keyring, KeyringError


def key_setting(*kids: str) -> str:
    return ",".join(f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in kids)


def test_round_trip_and_the_refresh_token_is_not_in_clear() -> None:
    ring = Keyring.from_setting(key_setting("k1"))
    secret = b'{"RefreshToken": {"x": {"secret": "0.AAAA-refresh-token"}}}'
    sealed = ring.seal(secret, b"connection-1")
    assert b"refresh-token" not in sealed
    assert ring.open(sealed, b"connection-1") == secret


def test_a_blob_moved_to_another_connection_does_not_open() -> None:
    ring = Keyring.from_setting(key_setting("k1"))
    sealed = ring.seal(b"cache", b"connection-1")
    with pytest.raises(KeyringError, match="failed authentication"):
        ring.open(sealed, b"connection-2")


def test_a_tampered_blob_does_not_open() -> None:
    ring = Keyring.from_setting(key_setting("k1"))
    sealed = bytearray(ring.seal(b"cache", b"c"))
    sealed[-1] ^= 1
    with pytest.raises(KeyringError, match="failed authentication"):
        ring.open(bytes(sealed), b"c")


def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    old = key_setting("k1")
    sealed_with_old = Keyring.from_setting(old).seal(b"cache", b"c")
    rotated = Keyring.from_setting(key_setting("k2") + "," + old)
    assert rotated.open(sealed_with_old, b"c") == b"cache"
    assert rotated.needs_reseal(sealed_with_old)
    assert not rotated.needs_reseal(rotated.seal(b"cache", b"c"))


def test_a_retired_key_is_named_in_the_error() -> None:
    sealed = Keyring.from_setting(key_setting("k1")).seal(b"cache", b"c")
    with pytest.raises(KeyringError, match="'k1'"):
        Keyring.from_setting(key_setting("k2")).open(sealed, b"c")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "no key configured"),
        ("nokid", "kid:base64key"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
    ],
)
def test_malformed_settings_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message):
        Keyring.from_setting(value)

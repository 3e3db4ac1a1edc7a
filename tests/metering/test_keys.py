import hashlib
import re

from speech.metering.keys import MAX_KEY_LENGTH, generate_key, hash_key, parse_key, verify


def test_generate_key_shape():
    key = generate_key()
    assert re.fullmatch(r"sk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    assert parse_key(key) == key[3:15]


def test_generate_key_is_random():
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    assert len({parse_key(k) for k in keys}) == 200


def test_hash_key_is_sha256_hex():
    key = generate_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(key))


def test_verify():
    key = generate_key()
    stored = hash_key(key)
    assert verify(key, stored)
    assert not verify(key + "x", stored)
    assert not verify(generate_key(), stored)
    assert not verify(key, "")
    assert not verify(key, "é" * 64)  # non-ASCII stored value: no TypeError


def test_parse_key_rejects_bad_shapes():
    good = generate_key()
    key_id = good[3:15]
    secret = good[16:]
    bad = [
        "",
        "sk_",
        "sk_" + key_id,
        "sk_" + key_id + "_",
        "sk_" + key_id + "_short",
        "pk_" + key_id + "_" + secret,
        "sk_" + key_id.upper() + "_" + secret,
        "sk_" + key_id[:11] + "_" + secret,
        "sk_" + key_id + "-" + secret,
        "sk_" + key_id + "_" + secret + "!",
        " " + good,
        good + "\n",
        "sk_" + key_id + "_" + "a" * (MAX_KEY_LENGTH),
        "Bearer " + good,
    ]
    for key in bad:
        assert parse_key(key) is None, key
    assert parse_key(None) is None
    assert parse_key(b"sk_" + key_id.encode() + b"_" + secret.encode()) is None
    assert parse_key(12) is None


def test_parse_key_accepts_secret_with_underscores():
    key = "sk_0123456789ab_" + "_" * 10 + "-" * 33
    assert parse_key(key) == "0123456789ab"

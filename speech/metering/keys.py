"""API key format, hashing and verification.

A key looks like ``sk_<key_id>_<secret>``:

* ``sk_`` is a fixed prefix so keys are easy to recognise (and to grep for
  in leaked logs);
* ``key_id`` is 12 lowercase hex characters (48 random bits). It is *public*:
  it is stored in clear as the lookup id, shown by ``speech keys list`` and
  used in usage records and logs;
* ``secret`` is ``secrets.token_urlsafe(32)``: 256 random bits, 43 URL-safe
  base64 characters (it may itself contain ``_`` and ``-``).

The whole key is the secret. Only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "sk_"
KEY_ID_LENGTH = 12
SECRET_BYTES = 32
# Longest string :func:`parse_key` will look at; anything longer is refused
# before any regex or hashing work.
MAX_KEY_LENGTH = 200

# The secret part is token_urlsafe(32) (43 chars) today; accept a range so a
# future change of the secret length keeps old and new keys valid.
_KEY_RE = re.compile(r"sk_([0-9a-f]{12})_[A-Za-z0-9_-]{32,180}")


def generate_key() -> str:
    """A new random API key: ``sk_`` + 12-hex key id + ``_`` + 256-bit secret."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def hash_key(key: str) -> str:
    """SHA-256 hex digest of the full key.

    A fast, unsalted hash is adequate here: keys carry 256 bits of randomness
    from :mod:`secrets`, so there is no dictionary to attack and brute force
    is infeasible whatever the hash speed. Slow password hashes (bcrypt,
    scrypt, argon2) only help for low-entropy, human-chosen secrets, and would
    add tens of milliseconds to every authenticated request.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_key(key: object) -> str | None:
    """The key id of a well-formed key, or ``None`` if the shape is wrong.

    A cheap check done before any database lookup; it does not say whether
    the key exists. Non-strings and strings over :data:`MAX_KEY_LENGTH`
    characters are refused.
    """
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    match = _KEY_RE.fullmatch(key)
    return match.group(1) if match else None


def verify(key: str, stored_hash: str) -> bool:
    """Whether ``key`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_key(key).encode("ascii"), stored_hash.encode("utf-8"))

"""Keyed pseudonyms for user ids in logs (never raw ids, never in metric labels).

A pseudonym is a keyed BLAKE2b hash of the user id: stable within a deployment (so one
user's log lines can be followed) and not reversible without ``NUDGESTREAM_PSEUDONYM_KEY``.
Without a configured key a random per-process key is used, so pseudonyms still hide ids
but differ between restarts.
"""

from __future__ import annotations

import hashlib
import secrets


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        self._key = key or secrets.token_bytes(32)

    def __call__(self, user_id: str) -> str:
        digest = hashlib.blake2b(user_id.encode(), key=self._key[:64], digest_size=8)
        return "u_" + digest.hexdigest()

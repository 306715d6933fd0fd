"""Secrets: random tokens, their stored hashes, password hashing, constant-time comparison.

Tokens (sessions, reset and magic links, embed tokens) are 256-bit random values; only their
SHA-256 is stored, which is enough for values with that much entropy. Passwords use Argon2id
(argon2-cffi, the reference implementation's bindings) in a worker thread so that a slow KDF
does not stall the event loop.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import unicodedata
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane): slow enough for
# offline guessing, small enough that a burst of sign-ins cannot balloon the process.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# At most two hashes at a time per process (memory stays bounded, and the default thread pool
# stays free for everything else); more sign-ins at once simply queue.
_kdf_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kdf")
# Verified when the account does not exist, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))


def use_cheap_kdf_for_tests() -> None:
    """Tests create hundreds of accounts; each stored hash records its own parameters, so a
    cheaper setting changes speed only, never what is checked."""
    global _hasher, _DUMMY_HASH
    _hasher = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    _DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def _bytes(text: str) -> bytes:
    # Header values that were not UTF-8 on the wire reach us with surrogate escapes (aiohttp decodes
    # them with "surrogateescape"); encode them back the same way instead of failing with a 500.
    return text.encode("utf-8", "surrogateescape")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(_bytes(token)).digest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time string equality; False when either side is missing."""
    if not a or not b:
        return False
    return hmac.compare_digest(_bytes(a), _bytes(b))


def normalize_email(email: str) -> str:
    """The key an account is found by: "ÅSA@Example.com", "A\u030aSA@example.com" and full-width
    letters all give "åsa@example.com". NFKC folds compatibility forms, casefold is Unicode-aware
    lower(); NFKC again because case folding can leave a string unnormalised (Unicode's NFKC_Casefold)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).strip().casefold())


def _normalize_password(password: str) -> str:
    # NIST SP 800-63B 5.1.1.2: the same password typed on another keyboard or OS (composed vs
    # decomposed accents) must still match. Never truncated: Argon2 hashes every byte.
    return unicodedata.normalize("NFKC", password)


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_kdf_pool, _hasher.hash, _normalize_password(password))


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """Always runs the KDF (on a dummy hash for unknown accounts) so that a wrong email costs as
    long as a wrong password."""

    def check() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, _normalize_password(password)) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.get_running_loop().run_in_executor(_kdf_pool, check)


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with other parameters than today's (upgrade it at sign-in)."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False

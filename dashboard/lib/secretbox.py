"""Encrypt secrets at rest (database URLs) with Fernet: AES-128-CBC plus HMAC-SHA256.

The key is RETORT_ENCRYPTION_KEY (a Fernet key) or, when unset, one derived from SECRET_KEY so a
local checkout works; production sets its own key.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    """The value was not encrypted with the current key."""


@cache
def _fernet(key: str, fallback_secret: str) -> Fernet:
    if key:
        try:
            return Fernet(key.encode())
        except ValueError:
            raise ImproperlyConfigured(
                "RETORT_ENCRYPTION_KEY must be 32 url-safe base64-encoded bytes "
                "(make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from None
    derived = hashlib.sha256(b"retort-secretbox:" + fallback_secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def _box() -> Fernet:
    return _fernet(settings.RETORT_ENCRYPTION_KEY, settings.SECRET_KEY)


def encrypt(plain: str) -> str:
    return _box().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _box().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("value cannot be decrypted with the current key") from None

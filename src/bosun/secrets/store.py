"""The secret store: values encrypted at rest with AES-256-GCM, one file under ``BOSUN_HOME``.

The key comes, in order, from ``BOSUN_SECRETS_PASSPHRASE`` (scrypt-derived), the OS keyring
when one with a real backend exists, or a random key in a 0600 file beside the store. Each
value is bound to its name as associated data, so a ciphertext moved to another name fails to
decrypt instead of silently answering for it.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict

from bosun.files import write_atomic

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
PASSPHRASE_ENV = "BOSUN_SECRETS_PASSPHRASE"
_KEYRING_SERVICE = "bosun"


class SecretError(RuntimeError):
    """A secret is missing, malformed or cannot be decrypted; the message says what to run."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class _Sealed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nonce: str
    ciphertext: str
    updated_at: datetime


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    kdf_salt: str | None = None  # set when the key is derived from a passphrase
    secrets: dict[str, _Sealed] = {}


@dataclass(frozen=True)
class SecretInfo:
    name: str
    updated_at: datetime


def _keyring_key(create: bool) -> bytes | None:
    # Imported here: keyring scans its backends on import, which every other command can skip.
    import keyring
    from keyring.backends.fail import Keyring as FailKeyring

    try:
        if isinstance(keyring.get_keyring(), FailKeyring):
            return None
        stored = keyring.get_password(_KEYRING_SERVICE, "secrets-key")
        if stored:
            return base64.b64decode(stored)
        if not create:
            return None
        key = AESGCM.generate_key(bit_length=256)
        keyring.set_password(_KEYRING_SERVICE, "secrets-key", _b64(key))
        return key
    except Exception:
        # A keyring that exists but cannot be used (locked, no session bus) is not an error.
        return None


class SecretStore:
    def __init__(self, root: Path) -> None:
        self.path = root / "secrets.json"
        self.key_path = root / "secrets.key"

    def _load(self) -> _File:
        if not self.path.exists():
            return _File()
        return _File.model_validate_json(self.path.read_text())

    def _save(self, data: _File) -> None:
        write_atomic(self.path, data.model_dump_json(indent=2))

    def _key(self, data: _File, create: bool) -> bytes:
        passphrase = os.environ.get(PASSPHRASE_ENV)
        if passphrase:
            if data.kdf_salt is None:
                data.kdf_salt = _b64(secrets.token_bytes(16))
            kdf = Scrypt(salt=base64.b64decode(data.kdf_salt), length=32, n=2**15, r=8, p=1)
            return kdf.derive(passphrase.encode())
        if data.kdf_salt is not None:
            raise SecretError(f"the secret store is protected by a passphrase: set {PASSPHRASE_ENV}")
        if self.key_path.exists():
            return base64.b64decode(self.key_path.read_text())
        if (key := _keyring_key(create)) is not None:
            return key
        if not create:
            raise SecretError(f"no key for the secret store ({self.key_path} is missing)")
        key = AESGCM.generate_key(bit_length=256)
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_b64(key))
        return key

    def set(self, name: str, value: str) -> None:
        if not NAME.match(name):
            raise SecretError(f"{name!r} is not a valid secret name (lowercase letters, digits, . _ -)")
        if not value:
            raise SecretError(f"refusing to store an empty value for {name}")
        data = self._load()
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self._key(data, create=True)).encrypt(nonce, value.encode(), name.encode())
        data.secrets[name] = _Sealed(nonce=_b64(nonce), ciphertext=_b64(sealed), updated_at=datetime.now(UTC))
        self._save(data)

    @staticmethod
    def _open(cipher: AESGCM, name: str, sealed: _Sealed) -> str:
        try:
            plain = cipher.decrypt(base64.b64decode(sealed.nonce), base64.b64decode(sealed.ciphertext), name.encode())
        except InvalidTag:
            raise SecretError(f"secret {name!r} does not decrypt: wrong key or a tampered store") from None
        return plain.decode()

    def get(self, name: str) -> str:
        data = self._load()
        sealed = data.secrets.get(name)
        if sealed is None:
            raise SecretError(f"secret {name!r} is not set: run `bosun secret set {name}` (reads the value from stdin)")
        return self._open(AESGCM(self._key(data, create=False)), name, sealed)

    def remove(self, name: str) -> bool:
        data = self._load()
        if data.secrets.pop(name, None) is None:
            return False
        self._save(data)
        return True

    def infos(self) -> list[SecretInfo]:
        return [SecretInfo(n, s.updated_at) for n, s in sorted(self._load().secrets.items())]

    def all(self) -> dict[str, str]:
        """Every stored value by name, for redaction, never for display. One key derivation for all:
        with a passphrase, scrypt costs tens of milliseconds each time."""
        data = self._load()
        if not data.secrets:
            return {}
        cipher = AESGCM(self._key(data, create=False))
        return {name: self._open(cipher, name, sealed) for name, sealed in data.secrets.items()}

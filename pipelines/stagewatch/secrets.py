"""Credentials and keys, read where they are used: Secret Manager, else an environment variable.

Never printed: every error names where it looked, never what it found (the value is the credential).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from stagewatch.core.privacy import MIN_KEY_BYTES, UID_KEY_ENV

__all__ = ["UidKey", "secret_value"]


def secret_value(env_name: str, option: str, secret: str | None = None, env: dict[str, str] | None = None,
                 session: Any = None, what: str = "credential") -> str:
    """A credential from Secret Manager (``secret``: ``projects/P/secrets/S[/versions/V]``) or else the environment
    variable ``env_name``; ``ValueError`` naming where it looked (``what``, ``option``) when there is none."""
    if secret:
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

        name = secret if "/versions/" in secret else f"{secret}/versions/latest"
        if session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            try:
                credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            except DefaultCredentialsError:
                raise ValueError(f"no Google credentials to read {name} (run: gcloud auth application-default "
                                 "login)") from None
            session = AuthorizedSession(credentials)
        try:
            resp = session.get(f"https://secretmanager.googleapis.com/v1/{name}:access", timeout=30)
        except (OSError, GoogleAuthError) as exc:  # requests' errors are OSErrors; a token refresh can fail too
            raise ValueError(f"could not reach Secret Manager for {name}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise ValueError(f"Secret Manager refused {name}: HTTP {resp.status_code}")
        try:
            return base64.b64decode(resp.json()["payload"]["data"], validate=True).decode().strip()
        except (ValueError, KeyError, TypeError):
            # Not JSON, no payload, not base64, not UTF-8. Said without the decoder's words: a UnicodeDecodeError
            # quotes a byte of the value and its position. "from None": nor in a chained traceback.
            raise ValueError(f"Secret Manager's answer for {name} holds no UTF-8 text (is the secret's value text?)"
                             ) from None
    value = (env if env is not None else os.environ).get(env_name, "").strip()
    if not value:
        raise ValueError(f"no {what}: set ${env_name}, or give {option} projects/P/secrets/S")
    return value


@dataclass(frozen=True)
class UidKey:
    """Where the uid key is (``core/privacy.py``): ``secret`` (``projects/P/secrets/S[/versions/V]``), else
    ``$STAGEWATCH_UID_KEY``. Pickled as that place, never as the key: a worker reads the key itself."""

    secret: str | None = None

    def resolve(self) -> bytes:
        """The key's bytes; ``ValueError`` naming where it looked (never the value) when absent or too short.
        A secret is fetched once per process: a Beam worker unpickles the parsing step for every bundle."""
        if self.secret is not None and self.secret in _FETCHED:
            return _FETCHED[self.secret]
        key = secret_value(UID_KEY_ENV, "--uid-key-secret", self.secret, what="uid key").encode()
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the uid key in {self.secret or '$' + UID_KEY_ENV} is {len(key)} bytes; it must be "
                             f"at least {MIN_KEY_BYTES} (make one with: openssl rand -hex 32)")
        if self.secret is not None:
            _FETCHED[self.secret] = key
        return key


_FETCHED: dict[str, bytes] = {}  # secret name -> key, for this process

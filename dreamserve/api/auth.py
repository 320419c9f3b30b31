"""API keys: `Authorization: Bearer <token>` (or `Token <token>`, which older clients send).

Tokens are "ds_" + random and only their sha256 is stored, so a leaked database does not leak
working keys. A key sees only its own predictions and files (owner = key id). When the store
holds no keys the service runs open (owner None); `dreamserve serve` refuses that on a public
bind unless told otherwise. Also the functions behind `dreamserve keys create|list|revoke`.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from dreamserve.api.errors import problem
from dreamserve.config import Settings
from dreamserve.jobs.model import ApiKey, Store
from dreamserve.request import FieldError

TOKEN_PREFIX = "ds_"
SCHEMES = ("bearer", "token")
OWNER_KEY = "owner"  # where the request's owner lives in scope["state"]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_authorization(header: str | None) -> str | None:
    """The token from `Bearer <token>` / `Token <token>`; None when absent or malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in SCHEMES or not token:
        return None
    return token


class Unauthorized(Exception):
    pass


def resolve_owner(store: Store, token: str | None) -> str | None:
    """The key id the token belongs to, None when the service runs open, else Unauthorized.

    One function so the API calls the store from one worker thread per request.
    """
    if token is not None:
        key = store.key_for_hash(hash_token(token))
        if key is not None and key.revoked_at is None:
            return key.id
    if not store.has_keys():
        # Open mode: any client works, including one that sends some unrelated token.
        return None
    raise Unauthorized("missing API key" if token is None else "invalid or revoked API key")


def request_owner(conn: HTTPConnection) -> str | None:
    """The owner the auth middleware resolved for this request (None when open)."""
    owner: str | None = conn.scope.get("state", {}).get(OWNER_KEY)
    return owner


class AuthMiddleware:
    """Authenticates every request under the protected prefixes; others pass through.

    Output files (/files/...) stay public on purpose: their URLs carry unguessable ids, and
    clients (and browsers) fetch them without credentials, as they do from Replicate's CDN.
    """

    def __init__(self, app: ASGIApp, store: Store, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.store = store
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        token = parse_authorization(HTTPConnection(scope).headers.get("authorization"))
        try:
            owner = await asyncio.to_thread(resolve_owner, self.store, token)
        except Unauthorized as exc:
            response = problem(
                401,
                "Unauthorized",
                [FieldError("Authorization", f"{exc}: send 'Bearer <token>'")],
                headers={"WWW-Authenticate": 'Bearer realm="dreamserve"'},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[OWNER_KEY] = owner
        await self.app(scope, receive, send)


# --- the `dreamserve keys` commands


def _open_store(settings: Settings) -> Store:
    from dreamserve.jobs.store import open_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_store(settings.store_url)


def create_key(settings: Settings, name: str) -> tuple[ApiKey, str]:
    """A new key and its token; the token is shown once and never stored."""
    token = new_token()
    return _open_store(settings).create_key(name, hash_token(token)), token


def list_keys(settings: Settings) -> list[ApiKey]:
    return _open_store(settings).list_keys()


def revoke_key(settings: Settings, key_id: str) -> ApiKey:
    return _open_store(settings).revoke_key(key_id)

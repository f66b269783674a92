"""Credentials: API keys issued by the hub, and HS256 JWTs signed with the hub's
``SWITCH_JWT_SECRET``."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Optional, Sequence, Union

import jwt

__all__ = ["sign_token", "Scope", "API_KEY_PREFIX"]

#: A scope is a space-separated string (``"publish admin"``) or a sequence of words.
Scope = Union[str, Sequence[str]]

#: What every API key the hub issues starts with.
API_KEY_PREFIX = "sk_"

#: Lifetime of the tokens the clients sign for themselves.
TOKEN_TTL_SECONDS = 60
#: A cached token is replaced when fewer than this many seconds of it remain.
_RENEW_MARGIN_SECONDS = 15


def _scope_claim(scope: Optional[Scope]) -> Optional[str]:
    if scope is None:
        return None
    if isinstance(scope, str):
        words = scope.split()
    else:
        words = [w for part in scope for w in str(part).split()]
    return " ".join(words) if words else None


def sign_token(
    secret: str,
    *,
    author: Optional[str] = None,
    scope: Optional[Scope] = None,
    topics: Optional[Sequence[str]] = None,
    ttl: Optional[float] = TOKEN_TTL_SECONDS,
) -> str:
    """Sign an HS256 publisher token.

    Args:
        secret: the hub's ``SWITCH_JWT_SECRET``.
        author: the ``author`` claim (who publishes).
        scope: the ``scope`` claim, e.g. ``"publish admin"`` or ``["publish", "admin"]``.
            A token without a scope may publish and refresh but not use the admin API.
        topics: the optional ``topics`` claim restricting which topics may be published.
        ttl: seconds until ``exp``; ``None`` signs a token without ``exp``.
    """
    claims: Dict[str, Any] = {}
    if author is not None:
        claims["author"] = author
    scope_claim = _scope_claim(scope)
    if scope_claim is not None:
        claims["scope"] = scope_claim
    if topics is not None:
        claims["topics"] = list(topics)
    if ttl is not None:
        claims["exp"] = int(time.time() + ttl)
    token = jwt.encode(claims, secret, algorithm="HS256")
    # PyJWT < 2 returned bytes.
    return token.decode("ascii") if isinstance(token, bytes) else token


def check_api_key(api_key: object) -> str:
    """The key to send: an ``sk_…`` key the hub issued, without surrounding whitespace."""
    if not isinstance(api_key, str):
        raise TypeError(f"api_key must be a string (sk_…), not {type(api_key).__name__}")
    key = api_key.strip()
    if not key:
        raise ValueError("api_key must not be empty")
    if not key.startswith(API_KEY_PREFIX) or any(c.isspace() for c in key):
        raise ValueError(
            f"api_key must be a key the hub issued ({API_KEY_PREFIX}…, from POST /keys or "
            "client.keys.create); pass a JWT as token=, the hub's secret as jwt_secret="
        )
    return key


class TokenProvider:
    """Gives the ``Authorization`` header: an API key or a fixed token, sent as is,
    or a token signed on demand and cached until shortly before it expires.

    At most one credential may be given (``api_key``, ``token`` or ``jwt_secret``);
    ``author`` and ``scope`` go with ``jwt_secret`` only.
    """

    def __init__(
        self,
        *,
        jwt_secret: Optional[str] = None,
        token: Optional[str] = None,
        author: Optional[str] = None,
        scope: Optional[Scope] = None,
        api_key: Optional[str] = None,
    ) -> None:
        if api_key is not None:
            others = [
                name
                for name, value in (("jwt_secret", jwt_secret), ("token", token))
                if value is not None
            ]
            if others:
                raise ValueError(
                    f"give either api_key or {' or '.join(others)}, not both: "
                    "an API key is the whole credential"
                )
            if author is not None or scope is not None:
                raise ValueError(
                    "author and scope are claims of a signed token; an API key's author is "
                    "its name and its scope was fixed when it was created"
                )
            api_key = check_api_key(api_key)
        if jwt_secret is not None and token is not None:
            raise ValueError("give either jwt_secret or token, not both")
        if token is not None and (author is not None or scope is not None):
            raise ValueError(
                "author and scope are claims of a signed token; they need jwt_secret"
            )
        if jwt_secret is not None and not jwt_secret:
            raise ValueError("jwt_secret must not be empty")
        self._secret = jwt_secret
        self._fixed = api_key if api_key is not None else token
        self._author = author
        self._scope = scope
        self._cached: Optional[str] = None
        self._cached_exp = 0.0
        self._lock = threading.Lock()

    def token(self) -> Optional[str]:
        """The credential to send now, or ``None`` when the client is anonymous."""
        if self._secret is None:
            return self._fixed
        with self._lock:
            now = time.time()
            if self._cached is None or now >= self._cached_exp - _RENEW_MARGIN_SECONDS:
                self._cached = sign_token(
                    self._secret,
                    author=self._author,
                    scope=self._scope,
                    ttl=TOKEN_TTL_SECONDS,
                )
                self._cached_exp = now + TOKEN_TTL_SECONDS
            return self._cached

    def headers(self) -> Dict[str, str]:
        token = self.token()
        return {"Authorization": f"Bearer {token}"} if token else {}

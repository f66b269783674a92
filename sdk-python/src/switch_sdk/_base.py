"""What the sync and async clients share: configuration, headers, error translation."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import httpx

from . import _api
from ._version import __version__
from .auth import Scope, TokenProvider
from .errors import NetworkError

USER_AGENT = f"switch-sdk-python/{__version__}"

TimeoutArg = Union[float, httpx.Timeout, None]


def normalize_base_url(base_url: str) -> str:
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError("base_url must be a URL such as http://127.0.0.1:8080")
    url = base_url.strip().rstrip("/")
    if not (url.startswith("http://") or url.startswith("https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url


def make_timeout(timeout: TimeoutArg) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout)


class BaseClient:
    """Configuration shared by :class:`~switch_sdk.Client` and
    :class:`~switch_sdk.AsyncClient`."""

    def __init__(
        self,
        base_url: str,
        *,
        jwt_secret: Optional[str] = None,
        token: Optional[str] = None,
        author: Optional[str] = None,
        timeout: TimeoutArg = 10.0,
        scope: Optional[Scope] = None,
        headers: Optional[Mapping[str, str]] = None,
        api_key: Optional[str] = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self._auth = TokenProvider(
            jwt_secret=jwt_secret, token=token, author=author, scope=scope, api_key=api_key
        )
        self._timeout = make_timeout(timeout)
        # A live stream waits as long as it takes for the next message; only connecting is bounded.
        self._stream_timeout = httpx.Timeout(
            connect=self._timeout.connect,
            read=None,
            write=self._timeout.write,
            pool=self._timeout.pool,
        )
        self._default_headers: Dict[str, str] = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if headers:
            self._default_headers.update(headers)

    def token(self) -> Optional[str]:
        """The bearer credential the next request will carry: the API key or token
        given, or a freshly signed token (``None`` if anonymous)."""
        return self._auth.token()

    def _request_kwargs(self, call: "_api.Call[Any]") -> Dict[str, Any]:
        headers: Dict[str, str] = {}
        if call.auth:
            headers.update(self._auth.headers())
        content = call.encode_body()
        if content is not None:
            headers["Content-Type"] = "application/json"
        headers.update(call.headers)
        return {
            "method": call.method,
            "url": call.path,
            "params": call.params or None,
            "content": content,
            "headers": headers,
        }

    def _network_error(self, call: "_api.Call[Any]", exc: Exception) -> NetworkError:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            what = f"timed out ({type(exc).__name__})"
        else:
            what = f"failed: {detail}"
        return NetworkError(f"{call.method} {self.base_url}{call.path} {what}")

"""Credentials for Google Speech-to-Text, as gRPC metadata for each stream.

Two ways, first match wins:

1. ``api_key`` -> ``x-goog-api-key: <key>``;
2. ``credentials_file`` (a service-account JSON key) -> google-auth
   ``service_account.Credentials`` with the ``cloud-platform`` scope, sent as
   ``authorization: Bearer <access token>``.

Neither -> :class:`~speech.errors.NotConfigured` ("google API key not
configured", the seed's words) when a stream is about to open.

Why metadata and not gRPC call credentials
(``google.auth.transport.grpc.AuthMetadataPlugin``): call credentials only
travel over TLS channels, so the loopback test double could not check them;
a plugin failure reaches us as a bare UNAVAILABLE, losing the difference
between "the token server is down" and "the key was refused"; and we want the
token request bounded by our own timeout. So the token is fetched here:

* reading the key file and every token request run in a worker thread
  (``asyncio.to_thread``), never on the event loop; a ``threading.Lock``
  (not an asyncio one, the recognizer serves several event loops) makes
  concurrent streams share one refresh;
* a cached token is reused while google-auth calls it FRESH, i.e. until
  3 min 45 s before it expires, so it is refreshed before expiry and a stream
  never starts with a token about to lapse;
* each HTTP request to the token endpoint times out after
  ``connect_timeout_s`` and the whole refresh (google-auth retries a failing
  endpoint with back-off) is bounded by the same time; loading the key file
  (local, once) is not timed.

Errors: an unreadable or malformed key file -> :class:`NotConfigured`;
the token endpoint refusing the key -> :class:`UpstreamAuthError`; the token
endpoint unreachable or failing transiently -> :class:`UpstreamUnavailable`;
too slow -> :class:`UpstreamTimeout`. No message carries a key or token.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from speech.errors import (
    ConfigError,
    EngineError,
    NotConfigured,
    UpstreamAuthError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from speech.providers.grpc_common import CLOUD_EXTRA_HINT
from speech.settings import GoogleSettings

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)

Metadata = tuple[tuple[str, str], ...]


class GoogleAuth:
    """Produces the auth metadata for one stream; safe to share between event loops."""

    def __init__(self, settings: GoogleSettings) -> None:
        self._api_key = settings.api_key
        self._credentials_file = settings.credentials_file
        self._timeout = settings.connect_timeout_s
        self._lock = threading.Lock()
        self._creds: Any = None  # google.oauth2.service_account.Credentials, loaded on first use
        self._request: Any = None  # google.auth.transport.requests.Request, one session reused

    async def metadata(self) -> Metadata:
        if self._api_key:
            return (("x-goog-api-key", self._api_key.get()),)
        if not self._credentials_file:
            raise NotConfigured("google API key not configured")
        if self._creds is None:
            await asyncio.to_thread(self._load_once)  # local file and imports: no network, not timed
        token = self._fresh_token()
        if token is None:
            try:
                token = await asyncio.wait_for(asyncio.to_thread(self._refresh_blocking), self._timeout)
            except TimeoutError as exc:
                raise UpstreamTimeout("google token server timed out") from exc
        return (("authorization", f"Bearer {token}"),)

    def _fresh_token(self) -> str | None:
        from google.auth.credentials import TokenState  # already imported by the key's loader

        creds = self._creds
        token = creds.token
        return str(token) if token and creds.token_state == TokenState.FRESH else None

    def _load_once(self) -> None:
        with self._lock:
            if self._creds is None:
                self._creds, self._request = self._load_blocking()

    def _refresh_blocking(self) -> str:
        """Runs in a worker thread: refresh the token unless another thread just did."""
        from google.auth import exceptions as auth_exceptions

        with self._lock:
            if (token := self._fresh_token()) is not None:
                return token
            creds = self._creds
            try:
                creds.refresh(self._request)
            except auth_exceptions.RefreshError as exc:
                raise _refresh_error(exc) from exc
            except auth_exceptions.TransportError as exc:
                raise UpstreamUnavailable("Failed to connect to google token server") from exc
            if not creds.token:
                raise UpstreamAuthError("google token server returned no access token")
            return str(creds.token)

    def _load_blocking(self) -> tuple[Any, Any]:
        try:
            import google.auth.transport.requests as auth_requests
            from google.oauth2 import service_account
        except ImportError as exc:  # pragma: no cover - the cloud extra is missing
            raise ConfigError(f"google-auth (with requests) is not installed; {CLOUD_EXTRA_HINT}") from exc
        path = self._credentials_file
        try:
            creds = service_account.Credentials.from_service_account_file(path, scopes=list(SCOPES))
        except OSError as exc:
            raise NotConfigured(f"google credentials file {path} cannot be read: {exc.strerror}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise NotConfigured(f"google credentials file {path} is not a service-account key") from exc
        timeout = self._timeout

        class _TimedRequest(auth_requests.Request):  # type: ignore[misc]
            """google-auth's requests transport with our timeout instead of its 120 s default."""

            def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any) -> Any:
                kw.setdefault("timeout", timeout)
                return super().__call__(url, method=method, body=body, headers=headers, **kw)

        return creds, _TimedRequest()


def _refresh_error(exc: Exception) -> EngineError:
    if getattr(exc, "retryable", False):
        return UpstreamUnavailable("google token server failed")
    return UpstreamAuthError("google rejected the gateway's service-account credentials")

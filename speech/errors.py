"""The gateway's one exception root and its tree.

Every error the gateway raises on purpose derives from :class:`SpeechError`.
Each class knows what the client sees: an HTTP status, a websocket close code
(when the error ends a stream) and whether retrying the same request elsewhere
may succeed. Upstream failures (gRPC status codes, HTTP statuses, library
exceptions) are translated into this tree at the provider boundary with
``raise ... from exc``; the edge (``speech.api``) only ever formats these.

Tree::

    SpeechError                      500  generic, permanent
    ├── ConfigError                       invalid configuration (start-up only)
    ├── BadRequest                   400  malformed client input, permanent
    │   ├── InvalidFrame             400  one bad websocket frame, session goes on
    │   │   └── FrameTooLarge        400  frame over the size cap
    │   ├── InvalidTtsRequest        400  bad TTS body (text, format, JSON)
    │   ├── InvalidChatRequest       400  bad chat-completions body (JSON, model, messages, max_tokens)
    │   └── UnsupportedOutputFormat  400  output_format not known
    ├── AuthError                    401  missing, unknown or revoked key
    ├── PaymentRequired              402  balance exhausted
    ├── LimitExceeded                429  a per-key limit: requests per minute, concurrent streams
    ├── IdleTimeout                       no audio and no KeepAlive for too long (close 4408)
    ├── SessionTooLong                    the stream reached its maximum duration (close 4409)
    ├── NotFound                     404  unknown provider route
    ├── EngineError                  503  an engine failed
    │   ├── EngineUnavailable        503  not loaded / cannot be reached, retryable
    │   │   ├── UpstreamUnavailable  503  connect refused, UNAVAILABLE, 5xx, stream dropped
    │   │   │   └── UpstreamServerError  502  the LLM upstream answered 5xx
    │   │   ├── UpstreamTimeout      503  connect / first-result timeout, DEADLINE_EXCEEDED
    │   │   │   └── UpstreamGatewayTimeout  504  the LLM upstream stayed silent too long
    │   │   └── UpstreamRateLimited  429  429, RESOURCE_EXHAUSTED, busy (carries Retry-After)
    │   ├── EngineOverloaded         503  bounded pool queue is full, retryable
    │   ├── NotConfigured            503  the engine has no credentials/endpoint, permanent
    │   ├── UpstreamAuthError        503  upstream refused the gateway's credentials, permanent
    │   ├── UpstreamRejected         400  upstream refused the request itself (invalid argument,
    │   │   │                             voice not found, text too long), permanent
    │   │   └── UpstreamClientError  4xx  the LLM upstream's own 4xx status, passed on
    │   └── UpstreamProtocolError    502  upstream answered garbage, retryable
    ├── CallerCredentialError        401  the caller's own upstream key (elevenlabs_api_key) was refused
    ├── CallerQuotaExceeded          402  the caller's own upstream key is out of quota
    └── ProtocolViolation                 too many bad frames: the stream is closed

Retryable errors move a route's engine chain on to its next engine (and put
the failed engine into a cool-down); permanent ones are reported as they are.
An error may add HTTP headers to its reply (:attr:`SpeechError.headers`:
``Retry-After`` of a rate-limited upstream).

Websocket close codes (documented in the README):

    1000  normal close (client asked, or CloseStream finished)
    1009  frame over the hard transport limit (closed by the websocket layer)
    1011  internal error: an engine failed in a way the stream cannot survive
    1013  try again later: engine overloaded or not ready
    4400  too many consecutive invalid frames
    4401  missing, unknown or revoked API key
    4402  balance exhausted
    4404  unknown provider in the path
    4408  idle timeout: no audio and no KeepAlive for limits.idle_timeout_s
    4409  the session reached limits.max_session_s
    4429  a per-key limit: too many concurrent streams or requests per minute
"""

from __future__ import annotations

CLOSE_NORMAL = 1000
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_PROTOCOL = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_PAYMENT_REQUIRED = 4402
CLOSE_NOT_FOUND = 4404
CLOSE_LIMIT = 4429
CLOSE_IDLE = 4408
CLOSE_SESSION_LIMIT = 4409


class SpeechError(Exception):
    """Root of every error the gateway raises on purpose."""

    status: int = 500
    close_code: int = CLOSE_INTERNAL
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        """The seed's error shape: ``{"error": "message"}``."""
        return {"error": self.message}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the reply carries besides the body (none by default)."""
        return {}


class ConfigError(SpeechError):
    """The configuration file, environment or command line is invalid."""


class BadRequest(SpeechError):
    status = 400
    close_code = CLOSE_PROTOCOL


class InvalidFrame(BadRequest):
    """A websocket frame that cannot be used; the session continues."""


class FrameTooLarge(InvalidFrame):
    pass


class InvalidTtsRequest(BadRequest):
    pass


class InvalidChatRequest(BadRequest):
    pass


class UnsupportedOutputFormat(BadRequest):
    pass


class AuthError(SpeechError):
    status = 401
    close_code = CLOSE_UNAUTHORIZED


class PaymentRequired(SpeechError):
    status = 402
    close_code = CLOSE_PAYMENT_REQUIRED


class LimitExceeded(SpeechError):
    status = 429
    close_code = CLOSE_LIMIT


class IdleTimeout(SpeechError):
    status = 408
    close_code = CLOSE_IDLE


class SessionTooLong(SpeechError):
    status = 408
    close_code = CLOSE_SESSION_LIMIT


class NotFound(SpeechError):
    status = 404
    close_code = CLOSE_NOT_FOUND


class EngineError(SpeechError):
    status = 503
    close_code = CLOSE_INTERNAL


class EngineUnavailable(EngineError):
    close_code = CLOSE_TRY_AGAIN
    retryable = True


class EngineOverloaded(EngineError):
    close_code = CLOSE_TRY_AGAIN
    retryable = True


class UpstreamUnavailable(EngineUnavailable):
    pass


class UpstreamServerError(UpstreamUnavailable):
    """The LLM upstream answered 5xx: the client sees 502 naming the provider."""

    status = 502


class UpstreamTimeout(EngineUnavailable):
    pass


class UpstreamGatewayTimeout(UpstreamTimeout):
    """The LLM upstream did not answer (or went silent) in time: 504."""

    status = 504


class UpstreamRateLimited(EngineUnavailable):
    status = 429

    def __init__(self, message: str, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": self.retry_after} if self.retry_after else {}


class NotConfigured(EngineError):
    pass


class UpstreamAuthError(EngineError):
    pass


class UpstreamRejected(EngineError):
    status = 400
    close_code = CLOSE_PROTOCOL


class UpstreamClientError(UpstreamRejected):
    """The LLM upstream refused the request itself with a 4xx (a bad
    parameter, an unknown model, a body too large): the client sees that
    status and the upstream's message."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class UpstreamProtocolError(EngineError):
    status = 502
    retryable = True


class CallerCredentialError(SpeechError):
    status = 401
    close_code = CLOSE_UNAUTHORIZED


class CallerQuotaExceeded(SpeechError):
    status = 402
    close_code = CLOSE_PAYMENT_REQUIRED


class ProtocolViolation(SpeechError):
    status = 400
    close_code = CLOSE_PROTOCOL

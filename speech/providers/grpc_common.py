"""What the gRPC adapters (Riva, Google) share: channels and error translation.

Errors are classified by gRPC status code, never by message text:

* UNAVAILABLE, INTERNAL, UNKNOWN, ABORTED, DATA_LOSS, CANCELLED -> retryable
  :class:`UpstreamUnavailable` ("Failed to connect to riva server" for
  UNAVAILABLE, the seed's words);
* DEADLINE_EXCEEDED -> retryable :class:`UpstreamTimeout`;
* RESOURCE_EXHAUSTED -> retryable :class:`UpstreamRateLimited`;
* UNAUTHENTICATED, PERMISSION_DENIED -> permanent :class:`UpstreamAuthError`;
* INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION, NOT_FOUND,
  UNIMPLEMENTED, ALREADY_EXISTS -> permanent :class:`UpstreamRejected`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from speech.errors import (
    ConfigError,
    EngineError,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

try:
    import grpc
    import grpc.aio
except ImportError:  # pragma: no cover - the cloud extra is missing
    grpc = None  # type: ignore[assignment]

CLOUD_EXTRA_HINT = "install the cloud engines with: pip install 'speech-gateway[cloud]'"

# 20 MiB: large enough for any synthesized answer, small enough to bound memory.
MAX_MESSAGE_BYTES = 20 * 1024 * 1024


def require_grpc() -> None:
    if grpc is None:
        raise ConfigError(f"grpcio is not installed; {CLOUD_EXTRA_HINT}")


def make_channel(url: str, *, tls: bool, ca_file: str = "") -> grpc.aio.Channel:
    """An asyncio channel to ``host:port``. Must be called on the event loop that uses it."""
    require_grpc()
    options: Sequence[tuple[str, int]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if not tls:
        return grpc.aio.insecure_channel(url, options=options)
    roots = None
    if ca_file:
        try:
            roots = Path(ca_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read CA file {ca_file}: {exc.strerror}") from exc
    return grpc.aio.secure_channel(url, grpc.ssl_channel_credentials(root_certificates=roots), options=options)


_RETRYABLE = {"UNAVAILABLE", "INTERNAL", "UNKNOWN", "ABORTED", "DATA_LOSS", "CANCELLED"}
_REJECTED = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND", "UNIMPLEMENTED", "ALREADY_EXISTS"}


def translate_rpc_error(exc: grpc.aio.AioRpcError | grpc.RpcError, provider: str) -> EngineError:
    """The gateway error for a failed RPC (use with ``raise ... from exc``).

    The upstream's detail text is kept short and only for rejected requests,
    where it tells the client what was wrong; it never carries our credentials.
    """
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = (exc.details() or "") if hasattr(exc, "details") else ""
    details = details.strip()[:200]
    if name == "UNAVAILABLE":
        return UpstreamUnavailable(f"Failed to connect to {provider} server")
    if name == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(f"{provider} server timed out")
    if name == "RESOURCE_EXHAUSTED":
        return UpstreamRateLimited(f"{provider} server is rate limiting or out of capacity")
    if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return UpstreamAuthError(f"{provider} rejected the gateway's credentials")
    if name in _REJECTED:
        return UpstreamRejected(
            f"{provider} rejected the request ({name}): {details}"
            if details
            else f"{provider} rejected the request ({name})"
        )
    return UpstreamUnavailable(f"{provider} server failed ({name})")

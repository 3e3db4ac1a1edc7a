"""What the Riva ASR and TTS adapters share: stubs and metadata.

Channels (one per event loop) and the recovery of a status grpc.aio masked
(grpc/grpc#36066) are the gRPC adapters' common pieces, in
:mod:`speech.providers.grpc_common`.

* **Metadata**: ``authorization: Bearer <api_key>`` when a key is set and
  ``function-id: <id>`` when one is set (hosted Riva on NVIDIA's cloud).
* The generated stubs come from ``nvidia-riva-client`` and are imported only
  here, under short aliases (``rasr``, ``rtts``, ...), and re-used by the two
  adapters of this package; no protobuf message leaves it. A missing
  ``cloud`` extra is a :class:`~speech.errors.ConfigError` naming it, raised
  when an adapter is built, not at import.
"""

from __future__ import annotations

from speech.errors import ConfigError
from speech.providers.grpc_common import CLOUD_EXTRA_HINT, require_grpc
from speech.settings import RivaSettings

try:
    from riva.client.proto import riva_asr_pb2 as rasr
    from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
    from riva.client.proto import riva_audio_pb2 as raudio
    from riva.client.proto import riva_tts_pb2 as rtts
    from riva.client.proto import riva_tts_pb2_grpc as rtts_grpc
except (ImportError, RuntimeError) as exc:  # pragma: no cover - RuntimeError: stubs newer than grpcio
    rasr = rasr_grpc = raudio = rtts = rtts_grpc = None  # type: ignore[assignment]
    _STUBS_ERROR: Exception | None = exc
else:
    _STUBS_ERROR = None

__all__ = [
    "PROVIDER",
    "metadata",
    "rasr",
    "rasr_grpc",
    "raudio",
    "require_stubs",
    "rtts",
    "rtts_grpc",
]

PROVIDER = "riva"


def require_stubs() -> None:
    """Raise :class:`ConfigError` naming the ``cloud`` extra if the stubs are missing."""
    require_grpc()
    if _STUBS_ERROR is not None:
        raise ConfigError(f"the Riva client stubs cannot be imported ({_STUBS_ERROR}); {CLOUD_EXTRA_HINT}")


def metadata(settings: RivaSettings, function_id: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for one call (keys are lowercase, as gRPC requires)."""
    out: list[tuple[str, str]] = []
    if settings.api_key:
        out.append(("authorization", f"Bearer {settings.api_key.get()}"))
    if function_id:
        out.append(("function-id", function_id))
    return tuple(out)

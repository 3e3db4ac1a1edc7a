"""ElevenLabs text to speech over HTTPS (``/v1/text-to-speech/{voice_id}``).

* :mod:`.tts` - :class:`ElevenLabsSynthesizer`, the engine (httpx, one pooled
  client per event loop);
* :mod:`.wire` - request building and validation, pure functions;
* :mod:`.error_map` - upstream error bodies and transport failures translated
  into :mod:`speech.errors`, pure functions.

Only httpx is needed, a core dependency, so no extra has to be installed.
"""

from speech.providers.elevenlabs.tts import ElevenLabsSynthesizer

__all__ = ["ElevenLabsSynthesizer"]

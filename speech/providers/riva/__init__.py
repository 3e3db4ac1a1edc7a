"""NVIDIA Riva engines over gRPC: :mod:`.asr` (streaming recognition) and
:mod:`.tts` (synthesis). Both need the ``cloud`` extra (``nvidia-riva-client``
stubs and ``grpcio``)."""

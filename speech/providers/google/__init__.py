"""Google Cloud Speech-to-Text v1 (streaming recognition over gRPC).

:class:`~speech.providers.google.asr.GoogleRecognizer` is the engine;
:mod:`~speech.providers.google.wire` holds the proto-plus wire details and
:mod:`~speech.providers.google.auth` the credentials. Needs the ``cloud``
extra; without it, building the engine raises
:class:`~speech.errors.ConfigError` naming the extra.
"""

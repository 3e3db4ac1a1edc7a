"""Keeps API keys out of every log line, including uvicorn's access log.

uvicorn logs the path with its query string (``/api/core/google/asr?api_key=
sk_...``) in ``uvicorn.access`` and, for websockets, in ``uvicorn.error``. The
filter formats each record once, replaces ``api_key=`` values and anything
shaped like a gateway key, and stores the redacted text.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = (
    re.compile(r"((?:api_key|apikey|key|token|xi-api-key|elevenlabs_api_key)=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"sk_[A-Za-z0-9]+_[A-Za-z0-9_\-]+"),
)
REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    text = _PATTERNS[0].sub(lambda m: m.group(1) + REDACTED, text)
    return _PATTERNS[1].sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Redacts the message and each string argument in place.

    Arguments keep their positions because some formatters (uvicorn's
    access formatter) unpack them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "speech")


def install_redaction() -> None:
    """Attach the filter to the loggers that may see keys and to their handlers."""
    flt = RedactingFilter()
    for name in (*LOGGERS, ""):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(flt)
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(flt)

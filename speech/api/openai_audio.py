"""OpenAI-compatible audio endpoints: ``POST /v1/audio/transcriptions`` and
``POST /v1/audio/speech``, so the official ``openai`` client (and anything
built on it) works against the gateway with ``base_url=<gateway>/v1`` and a
gateway API key as its ``api_key`` (sent as ``Authorization: Bearer``;
``x-api-key`` and ``?api_key=`` work too).

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``,
so the client raises the matching exception class with a readable message:

======  =========================  ===================================
status  type                       when
======  =========================  ===================================
400     invalid_request_error      a bad field, an undecodable file
401     authentication_error       missing, unknown, revoked key
402     insufficient_quota         the account's balance is too low
404     not_found_error            unknown route
413     invalid_request_error      upload over 25 MB
429     rate_limit_error           the key's requests per minute
5xx     server_error               an engine failed or is not ready
======  =========================  ===================================

Transcriptions (multipart/form-data)
------------------------------------
* ``file`` (required): anything PyAV decodes (wav, mp3, ogg/opus, flac, m4a,
  webm ...), at most 25 MB (:data:`MAX_UPLOAD_BYTES`, as OpenAI), from 0.1 s
  to 2 h of audio (:data:`MAX_AUDIO_MS`).
* ``model`` (required): the name of an ASR route (``google``, ``riva``,
  ``local`` or any route configured) selects that route; every other model
  (``whisper-1``, ``gpt-4o-transcribe`` ...) is served by the ``local`` route.
* ``language``: passed to the recognizer as its language code, as given
  (ISO-639-1 ``en`` stays ``en``; ``en-US`` works too). Default ``en-US``, the
  streaming default. ``verbose_json`` reports it as sent (default ``en``)
  rather than OpenAI's English language name.
* ``response_format``: ``json`` (default, ``{"text"}``), ``text``, ``srt``,
  ``vtt``, ``verbose_json`` (``task``, ``language``, ``duration``, ``text``,
  ``segments``, plus ``words`` when ``timestamp_granularities[]`` has
  ``word``). ``diarized_json`` is not supported (400).
* ``timestamp_granularities[]``: ``segment`` and/or ``word``; only
  ``verbose_json`` uses them, as with OpenAI.
* ``prompt``, ``temperature``, ``stream`` (like ``whisper-1``, the reply is
  never streamed), ``include[]``, ``chunking_strategy``: accepted and ignored.

The file is decoded off the event loop and resampled to 16 kHz mono, then run
through the same Sans-I/O :class:`~speech.pipeline.session.AsrSession` (VAD
segmentation) as the streaming websocket. Each utterance is one recognizer
stream on the route's failover chain, at most :data:`CONCURRENT_UTTERANCES`
at once, and billed exactly as the websocket bills it: the milliseconds sent
to the recognizer at the route's per-minute price, one usage record per
utterance (idempotency key ``openai-asr:<request id>:<n>``). Silence is never
sent and never billed: a silent file gives ``""`` and no usage.

Credit: the whole cost is known once the file is segmented; if the account
has less available the request gets 402 before any recognition. Each
utterance then reserves its own cost before its audio goes upstream and
settles it after. If another request drained the account in between, the
short utterance is not sent, the rest are cancelled (their reservations
released) and the request gets 402; utterances already recognized stay
billed, so a balance never goes below zero.

Segments are the utterances: ``start``/``end`` are the utterance's audio span
in the file (speech plus the VAD's pre-roll and tail), in seconds; word times
are the utterance start plus the recognizer's word times. ``avg_logprob`` is
the log of the recognizer's confidence when it reports one; ``tokens``,
``temperature``, ``compression_ratio`` and ``no_speech_prob`` are fixed
placeholders (``[]``, 0, 1, 0) for clients that expect the fields.

Speech (JSON)
-------------
* ``input`` (required): 1 to ``limits.tts_max_chars`` characters.
* ``model`` (required): the name of a TTS route (``elevenlabs``, ``riva``,
  ``local`` or any route configured) selects it; every other model
  (``tts-1``, ``tts-1-hd``, ``gpt-4o-mini-tts`` ...) uses the ``local`` route.
* ``voice``: a name or ``{"id": ...}``, passed to the engine as ``voice_id``
  (the local voice ignores it; on the ``elevenlabs`` route it must be an
  ElevenLabs voice id).
* ``response_format``: ``mp3`` (default; 44.1 kHz 128 kbps), ``opus`` (Ogg,
  48 kHz 64 kbps), ``wav`` (24 kHz PCM16), ``pcm`` (raw 24 kHz PCM16LE mono,
  as OpenAI), ``flac`` (24 kHz). ``aac`` is not supported (400).
* ``speed`` (0.25 to 4.0) is validated and otherwise ignored; ``instructions``
  and ``stream_format`` are ignored (the reply is always the audio bytes).

The reply streams sentence by sentence (:mod:`speech.api.tts_stream`), as
OpenAI's does: chunked, no ``content-length``; ``wav`` carries a streaming
header. Billing is the streamed TTS endpoint's: the whole cost (characters of
``input`` at the route's price) is reserved up front or the request gets 402,
and one usage record (``openai-tts:<request id>``) bills the sentences that
were synthesized, all of ``input`` when the stream completes.

Every reply carries ``x-usage-cost-uomcu`` and ``x-engine`` headers, plus
``x-usage-audio-ms`` (transcriptions) or ``x-usage-characters`` (speech).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import av
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from speech.api.auth import extract_key
from speech.api.gateway import Gateway
from speech.api.tts_stream import streamed_response
from speech.audio.encode import OutputFormat, flac_format, parse_output_format
from speech.errors import (
    BadRequest,
    EngineError,
    PaymentRequired,
    SpeechError,
)
from speech.metering.prices import format_omcu
from speech.metering.records import ApiKey, UsageIn
from speech.pipeline.session import AsrSession, SessionConfig, SpeechAudio, SpeechEnded, SpeechStarted
from speech.providers.base import RecognitionConfig, SynthesisRequest, Word
from speech.providers.failover import FailoverRecognizer

log = logging.getLogger("speech.openai")

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's limit on the audio file
# The multipart envelope and the other form fields on top of the file.
MAX_FORM_OVERHEAD = 1024 * 1024
MAX_AUDIO_MS = 2 * 60 * 60 * 1000
MIN_AUDIO_MS = 100  # OpenAI refuses files under 0.1 s
MAX_JSON_BYTES = 1024 * 1024
CONCURRENT_UTTERANCES = 2
PIPELINE_RATE = 16000
BYTES_PER_MS = PIPELINE_RATE * 2 // 1000
FEED_BYTES = PIPELINE_RATE * 2  # one second of audio per session feed
RECOGNIZE_CHUNK_BYTES = 200 * BYTES_PER_MS  # what one streaming frame carries

DEFAULT_ROUTE = "local"
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")

# OpenAI response_format -> (our output format, Content-Type).
SPEECH_FORMATS: dict[str, tuple[OutputFormat, str]] = {
    "mp3": (parse_output_format("mp3_44100_128"), "audio/mpeg"),
    "opus": (parse_output_format("opus_48000_64"), "audio/ogg"),
    "wav": (parse_output_format("wav_24000"), "audio/wav"),
    "pcm": (parse_output_format("pcm_24000"), "audio/pcm"),
    "flac": (flac_format(24000), "audio/flac"),
}
MIN_SPEED, MAX_SPEED = 0.25, 4.0


# ------------------------------------------------------------------ errors


class InvalidParam(BadRequest):
    """A 400 that names the offending field (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class UploadTooLarge(InvalidParam):
    status = 413


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_ERROR_CODES = {401: "invalid_api_key", 402: "insufficient_quota", 429: "rate_limit_exceeded"}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
    """An error in OpenAI's shape."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"message": message, "type": kind, "param": param, "code": code or _ERROR_CODES.get(status)}
    return JSONResponse({"error": body}, status_code=status)


def _openai_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Answer the gateway's errors in OpenAI's shape instead of the seed's."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except SpeechError as exc:
            return error_response(
                exc.status, exc.message, param=getattr(exc, "param", None), code=getattr(exc, "code", None)
            )
        except HTTPException as exc:
            return error_response(exc.status_code, str(exc.detail))
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(500, "internal server error")

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# ------------------------------------------------------------ transcriptions


@dataclass
class _Utterance:
    index: int
    start_ms: int
    end_ms: int = 0
    forwarded_ms: int = 0
    received_ms: int = 0
    pcm: bytearray = field(default_factory=bytearray)

    @property
    def billed_ms(self) -> int:
        """What goes upstream and is billed, as the websocket counts it."""
        return min(self.forwarded_ms, len(self.pcm) // BYTES_PER_MS)


@dataclass
class _Segmented:
    duration_ms: int
    utterances: list[_Utterance]


@dataclass
class _Recognized:
    utterance: _Utterance
    engine: str
    text: str
    words: list[Word]
    confidence: float | None
    cost_uomcu: int


@dataclass(frozen=True)
class _TranscriptionOptions:
    route: str
    language: str  # as the client sent it, "" if not
    language_code: str  # what the recognizer gets
    response_format: str
    granularities: tuple[str, ...]


@_openai_errors
async def transcriptions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    account = await gateway.authenticate(extract_key(request.headers, request.query_params))
    form = await _read_form(request)
    try:
        upload = form.get("file")
        if upload is None:
            raise InvalidParam("missing 'file': upload the audio as a multipart/form-data file field", "file")
        if not isinstance(upload, UploadFile):
            raise InvalidParam("'file' must be an uploaded file, not a text field", "file")
        if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
            raise _too_large()
        opts = _transcription_options(form, gateway)
        recognizer = gateway.require_engines().recognizer(opts.route)
        await gateway.admit(account)
        await gateway.require_balance(account)
        config = SessionConfig(
            vad=gateway.settings.vad,
            rate=PIPELINE_RATE,
            language_code=opts.language_code,
            max_frame_bytes=max(FEED_BYTES, gateway.settings.limits.max_frame_bytes),
        )
        segmented = await asyncio.to_thread(_segment, upload.file, config)
    finally:
        await form.close()
    request_id = uuid.uuid4().hex
    results = await _recognize_all(gateway, account, recognizer, opts, segmented, request_id)
    gateway.metrics.asr_file(opts.route, segmented.duration_ms, sum(u.billed_ms for u in segmented.utterances))
    cost = sum(r.cost_uomcu for r in results)
    billed_ms = sum(r.utterance.billed_ms for r in results)
    engines = sorted({r.engine for r in results})
    log.info(
        "openai transcription route=%s engine=%s utterances=%d billed_ms=%d cost_uomcu=%d format=%s",
        opts.route,
        ",".join(engines) or "-",
        len(results),
        billed_ms,
        cost,
        opts.response_format,
    )
    headers = {
        "x-usage-audio-ms": str(billed_ms),
        "x-usage-cost-uomcu": str(cost),
        "x-engine": ",".join(engines) or recognizer.name,
    }
    spoken = [r for r in results if r.text]
    text = " ".join(r.text for r in spoken)
    fmt = opts.response_format
    if fmt == "json":
        return JSONResponse({"text": text}, headers=headers)
    if fmt == "text":
        return PlainTextResponse(text + "\n", headers=headers)
    if fmt == "srt":
        return PlainTextResponse(_srt(spoken), headers=headers)
    if fmt == "vtt":
        return PlainTextResponse(_vtt(spoken), media_type="text/vtt", headers=headers)
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": opts.language or "en",
        "duration": round(segmented.duration_ms / 1000, 3),
        "text": text,
    }
    if "segment" in opts.granularities:
        body["segments"] = [_segment_json(n, r) for n, r in enumerate(spoken)]
    if "word" in opts.granularities:
        body["words"] = [
            {
                "word": w.word,
                "start": (r.utterance.start_ms + w.start_ms) / 1000,
                "end": (r.utterance.start_ms + w.end_ms) / 1000,
            }
            for r in spoken
            for w in r.words
        ]
    return JSONResponse(body, headers=headers)


async def _read_form(request: Request) -> FormData:
    """The multipart form, refusing bodies over the upload limit while they
    arrive (a ``Content-Length`` over it is refused before reading)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidParam(
            "expected a multipart/form-data body with the audio in a 'file' field",
            "file",
        )
    limit = MAX_UPLOAD_BYTES + MAX_FORM_OVERHEAD
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large()

    async def limited() -> AsyncIterator[bytes]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large()
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=8, max_fields=64)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise InvalidParam(f"invalid multipart/form-data body: {exc.message}") from exc
    except ClientDisconnect as exc:
        raise InvalidParam("the upload was interrupted before it was complete", "file") from exc


def _too_large() -> UploadTooLarge:
    mb = MAX_UPLOAD_BYTES // (1024 * 1024)
    return UploadTooLarge(f"the audio file is over the {mb} MB limit", "file", "file_too_large")


def _form_str(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParam(f"'{name}' must be a text field, not a file", name)
    return value


def _transcription_options(form: FormData, gateway: Gateway) -> _TranscriptionOptions:
    model = _form_str(form, "model")
    if not model or not model.strip():
        raise InvalidParam("missing 'model' (e.g. 'whisper-1')", "model")
    model = model.strip()
    route = model if model in gateway.settings.routes.asr else DEFAULT_ROUTE
    fmt = (_form_str(form, "response_format") or "json").strip()
    if fmt not in TRANSCRIPTION_FORMATS:
        raise InvalidParam(
            f"unsupported response_format {_short(fmt)}; supported: {', '.join(TRANSCRIPTION_FORMATS)}",
            "response_format",
        )
    language = (_form_str(form, "language") or "").strip()
    if language and (len(language) > 35 or not LANGUAGE_RE.match(language)):
        raise InvalidParam(
            f"'language' must be an ISO-639-1 code such as 'en' (or a tag such as 'en-US'), got {_short(language)}",
            "language",
        )
    granularities: list[str] = []
    for name in ("timestamp_granularities[]", "timestamp_granularities"):
        for value in form.getlist(name):
            if not isinstance(value, str) or value not in GRANULARITIES:
                raise InvalidParam(
                    f"'timestamp_granularities' values must be 'word' or 'segment', got {_short(value)}",
                    "timestamp_granularities",
                )
            if value not in granularities:
                granularities.append(value)
    return _TranscriptionOptions(
        route=route,
        language=language,
        language_code=language or "en-US",
        response_format=fmt,
        granularities=tuple(granularities) or ("segment",),
    )


def _segment(file: IO[bytes], config: SessionConfig) -> _Segmented:
    """Decode the upload to 16 kHz mono PCM16 and segment it with the
    streaming session's VAD (blocking: runs in a worker thread). Only the
    utterances' audio is kept, never the whole file."""
    session = AsrSession(config)
    open_: dict[int, _Utterance] = {}
    done: list[_Utterance] = []

    def handle(events: list[Any]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                open_[event.utterance] = _Utterance(event.utterance, event.start_ms)
            elif isinstance(event, SpeechAudio):
                utt = open_.get(event.utterance)
                if utt is not None:
                    utt.pcm += event.pcm
            elif isinstance(event, SpeechEnded):
                utt = open_.pop(event.utterance, None)
                if utt is not None:
                    utt.start_ms, utt.end_ms = event.start_ms, event.end_ms
                    utt.forwarded_ms, utt.received_ms = event.forwarded_ms, event.received_ms
                    done.append(utt)

    pending = bytearray()
    total = 0
    try:
        file.seek(0)
        with av.open(file, mode="r") as container:
            if not container.streams.audio:
                raise InvalidParam("the file has no audio stream", "file")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=PIPELINE_RATE)

            def take(frames: list[av.AudioFrame]) -> None:
                nonlocal total
                for frame in frames:
                    data = frame.to_ndarray().tobytes()
                    total += len(data)
                    if total > MAX_AUDIO_MS * BYTES_PER_MS:
                        raise InvalidParam(
                            f"the audio is longer than {MAX_AUDIO_MS // 60000} minutes; split it into parts", "file"
                        )
                    pending.extend(data)
                while len(pending) >= FEED_BYTES:
                    handle(session.receive_bytes(bytes(pending[:FEED_BYTES])))
                    del pending[:FEED_BYTES]

            for frame in container.decode(stream):
                take(resampler.resample(frame))
            take(resampler.resample(None))
    except (av.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise InvalidParam(f"could not decode the audio file: {_decode_reason(exc)}", "file") from exc
    if total < MIN_AUDIO_MS * BYTES_PER_MS:
        raise InvalidParam("the audio file is too short: the minimum is 0.1 seconds of audio", "file")
    if len(pending) % 2:
        del pending[-1]
    if pending:
        handle(session.receive_bytes(bytes(pending)))
    handle(session.end())
    return _Segmented(total // BYTES_PER_MS, done)


def _decode_reason(exc: Exception) -> str:
    if isinstance(exc, av.FFmpegError):
        reason = getattr(exc, "strerror", None) or str(exc)
        return f"{reason} (is it an audio file? wav, mp3, ogg, flac, m4a and webm are supported)"
    return str(exc) or type(exc).__name__


async def _recognize_all(
    gateway: Gateway,
    account: ApiKey,
    recognizer: FailoverRecognizer,
    opts: _TranscriptionOptions,
    segmented: _Segmented,
    request_id: str,
) -> list[_Recognized]:
    utterances = segmented.utterances
    if not utterances:
        return []
    prices = gateway.prices
    total = sum(prices.asr_cost(opts.route, u.billed_ms) for u in utterances)
    if total > 0:
        available = await gateway.ledger.available(account.account_id)
        if available < total:
            raise PaymentRequired(
                f"insufficient balance: this request costs {format_omcu(total)} OMCU, "
                f"{format_omcu(max(0, available))} available"
            )
    limit = asyncio.Semaphore(CONCURRENT_UTTERANCES)

    async def one(utt: _Utterance) -> _Recognized:
        async with limit:
            return await _recognize_one(gateway, account, recognizer, opts, utt, f"openai-asr:{request_id}:{utt.index}")

    tasks = [asyncio.create_task(one(u)) for u in utterances]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _recognize_one(
    gateway: Gateway,
    account: ApiKey,
    recognizer: FailoverRecognizer,
    opts: _TranscriptionOptions,
    utt: _Utterance,
    reservation: str,
) -> _Recognized:
    route = opts.route
    billed_ms = utt.billed_ms
    want = gateway.prices.asr_cost(route, billed_ms)
    granted = await gateway.reserve(reservation, account, want)
    try:
        if granted < want:
            raise PaymentRequired(
                f"insufficient balance: the rest of this request costs {format_omcu(want)} OMCU, "
                f"{format_omcu(granted)} available"
            )
        pcm = bytes(utt.pcm[: billed_ms * BYTES_PER_MS])
        texts: list[str] = []
        words: list[Word] = []
        confidences: list[float] = []
        engine = recognizer.name
        try:
            config = RecognitionConfig(language_code=opts.language_code)
            async for transcript in recognizer.recognize(_chunks(pcm), config):
                if not transcript.is_final:
                    continue
                engine = transcript.engine or engine
                if transcript.text:
                    texts.append(transcript.text.strip())
                    words.extend(transcript.words)
                    if transcript.confidence is not None:
                        confidences.append(transcript.confidence)
        except SpeechError:
            raise
        except Exception as exc:
            log.exception("recognizer %s failed", recognizer.name)
            raise EngineError(f"{recognizer.name} recognizer failed") from exc
    except BaseException:
        await gateway.release(reservation)
        raise
    # The work is done: bill it even if the request is being cancelled.
    record, _ = await asyncio.shield(
        gateway.ledger.settle(
            reservation,
            UsageIn.asr(
                gateway.prices,
                idempotency_key=reservation,
                key_id=account.key_id,
                provider=route,
                engine=engine,
                audio_ms=billed_ms,
                received_ms=utt.received_ms,
            ),
        )
    )
    assert record is not None
    confidence = sum(confidences) / len(confidences) if confidences else None
    text = " ".join(t for t in texts if t)
    return _Recognized(utt, engine, text, words, confidence, record.cost_uomcu)


async def _chunks(pcm: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(pcm), RECOGNIZE_CHUNK_BYTES):
        yield pcm[offset : offset + RECOGNIZE_CHUNK_BYTES]


def _segment_json(n: int, r: _Recognized) -> dict[str, Any]:
    logprob = math.log(r.confidence) if r.confidence and r.confidence > 0 else 0.0
    return {
        "id": n,
        "seek": r.utterance.start_ms // 10,  # in 10 ms frames, as Whisper counts
        "start": r.utterance.start_ms / 1000,
        "end": r.utterance.end_ms / 1000,
        "text": r.text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": round(logprob, 4),
        "compression_ratio": 1.0,
        "no_speech_prob": 0.0,
    }


def _timestamp(ms: int, sep: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def _srt(results: list[_Recognized]) -> str:
    cues = [
        f"{n}\n{_timestamp(r.utterance.start_ms, ',')} --> {_timestamp(r.utterance.end_ms, ',')}\n{r.text}\n"
        for n, r in enumerate(results, start=1)
    ]
    return "\n".join(cues)


def _vtt(results: list[_Recognized]) -> str:
    cues = [
        f"{_timestamp(r.utterance.start_ms, '.')} --> {_timestamp(r.utterance.end_ms, '.')}\n{r.text}\n"
        for r in results
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


# ------------------------------------------------------------------ speech


@_openai_errors
async def speech(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    account = await gateway.authenticate(extract_key(request.headers, request.query_params))
    body = await _read_json(request)
    model = _str_field(body, "model")
    if not model or not model.strip():
        raise InvalidParam("missing 'model' (e.g. 'tts-1')", "model")
    model = model.strip()
    route = model if model in gateway.settings.routes.tts else DEFAULT_ROUTE
    text = _input(body, gateway.settings.limits.tts_max_chars)
    fmt_name = _str_field(body, "response_format") or "mp3"
    if fmt_name not in SPEECH_FORMATS:
        raise InvalidParam(
            f"unsupported response_format {_short(fmt_name)}; supported: {', '.join(SPEECH_FORMATS)}",
            "response_format",
        )
    fmt, content_type = SPEECH_FORMATS[fmt_name]
    speed = body.get("speed")
    if speed is not None and (
        isinstance(speed, bool)
        or not isinstance(speed, int | float)
        or not math.isfinite(speed)
        or not MIN_SPEED <= speed <= MAX_SPEED
    ):
        raise InvalidParam(f"'speed' must be a number from {MIN_SPEED} to {MAX_SPEED}", "speed")
    voice = _voice(body)
    _str_field(body, "instructions")
    _str_field(body, "stream_format")
    await gateway.admit(account)
    # OpenAI's model names mean nothing to the engines: the route is the choice.
    # (Which format the engines are asked for is the streamer's choice: the
    # format itself where streams concatenate, PCM to be encoded here otherwise.)
    synth_request = SynthesisRequest(text=text, output_format=fmt.name, voice_id=voice)
    # Streamed sentence by sentence, as OpenAI streams its speech.
    return await streamed_response(
        gateway, account, route, synth_request, fmt, media_type=content_type, id_prefix="openai-tts"
    )


async def _read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_JSON_BYTES:
        raise InvalidParam(f"request body is over {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        raise InvalidParam("request body is empty; expected JSON with 'model', 'input' and 'voice'")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidParam("request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidParam("request body must be a JSON object")
    return body


def _input(body: dict[str, Any], cap: int) -> str:
    if "input" not in body:
        raise InvalidParam("missing 'input': the text to speak", "input")
    text = body["input"]
    if not isinstance(text, str):
        raise InvalidParam("'input' must be a string", "input")
    if not text.strip():
        raise InvalidParam("'input' is empty", "input")
    if len(text) > cap:
        raise InvalidParam(f"'input' is {len(text)} characters; the limit is {cap}", "input")
    return text


def _voice(body: dict[str, Any]) -> str | None:
    """``voice`` as a name (``"alloy"``) or a custom voice object ``{"id": ...}``."""
    value = body.get("voice")
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str):
            raise InvalidParam("'voice' must be a voice name or an object with a string 'id'", "voice")
    elif value is not None and not isinstance(value, str):
        raise InvalidParam("'voice' must be a voice name or an object with a string 'id'", "voice")
    return value or None


def _str_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParam(f"'{name}' must be a string", name)
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

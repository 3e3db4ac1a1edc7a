"""The LLM providers: where each one lives, its key, and which models it takes.

Built once from :class:`~speech.settings.LlmSettings` at start-up
(:meth:`ProviderTable.from_settings` raises :class:`~speech.errors.ConfigError`
for a bad base URL or key). At request time the seed's errors come from here,
worded exactly as the seed API reference words them:

* 404 ``unsupported model provider: X`` (also for a provider turned off with
  ``enabled = false``);
* 404 ``unsupported model: X. Supported model prefixes for P: [a, b, ...]``;
* 503 ``P API key not configured``.

A model is accepted when it *starts with* one of the provider's prefixes
(``gpt-4o`` admits ``gpt-4o-2024-08-06``); the comparison is case-sensitive,
as model names are. A prefix ``""`` accepts every model.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from speech.errors import ConfigError, NotConfigured, NotFound
from speech.metering.prices import PriceTable
from speech.settings import LLM_PROVIDERS, LlmProviderSettings, LlmSettings, Secret

MAX_PREFIX_LENGTH = 200


def is_header_safe(value: str) -> bool:
    """Printable ASCII without spaces at the ends: safe inside an HTTP header."""
    return value.isascii() and value.isprintable() and value == value.strip()


@dataclass(frozen=True)
class Provider:
    """One upstream speaking the OpenAI Chat Completions protocol."""

    name: str
    base_url: str  # without a trailing slash
    api_key: Secret
    model_prefixes: tuple[str, ...]
    key_required: bool
    free: bool
    stream_usage: bool

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def accepts(self, model: str) -> bool:
        return any(model.startswith(prefix) for prefix in self.model_prefixes)

    def check_model(self, model: str) -> None:
        """NotFound with the seed's wording unless a prefix admits ``model``."""
        if not self.accepts(model):
            listed = ", ".join(self.model_prefixes)
            raise NotFound(f"unsupported model: {model}. Supported model prefixes for {self.name}: [{listed}]")

    def check_key(self) -> None:
        """NotConfigured ("openai API key not configured") when a key is needed and missing."""
        if self.key_required and not self.api_key:
            raise NotConfigured(f"{self.name} API key not configured")

    def headers(self) -> dict[str, str]:
        """Request headers for the upstream; the key only ever travels here."""
        out = {"content-type": "application/json", "user-agent": "speech-gateway"}
        if self.api_key:
            out["authorization"] = f"Bearer {self.api_key.get()}"
        return out


@dataclass(frozen=True)
class ProviderTable:
    providers: dict[str, Provider]

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> ProviderTable:
        """The enabled providers, validated (ConfigError naming the setting)."""
        out: dict[str, Provider] = {}
        for name in LLM_PROVIDERS:
            s: LlmProviderSettings = getattr(settings, name)
            if s.enabled:
                out[name] = _provider(name, s)
        return cls(out)

    def get(self, name: str) -> Provider:
        """The provider, or NotFound with the seed's wording."""
        try:
            return self.providers[name]
        except KeyError:
            raise NotFound(f"unsupported model provider: {name}") from None

    def unpriced(self, prices: PriceTable, *, usable_only: bool = False) -> list[tuple[str, str]]:
        """(provider, prefix) pairs of paid providers whose prefix has no price:
        models there are refused until the operator prices them.
        ``usable_only``: only providers that have their key (or need none)."""
        return [
            (p.name, prefix)
            for p in self.providers.values()
            if not p.free and (not usable_only or p.api_key or not p.key_required)
            for prefix in p.model_prefixes
            if prices.llm_unit_prices(prefix) is None
        ]


def _provider(name: str, s: LlmProviderSettings) -> Provider:
    where = f"setting 'llm.{name}"
    try:
        url = httpx.URL(s.base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"{where}.base_url' is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment or url.userinfo:
        raise ConfigError(
            f"{where}.base_url' must be an http:// or https:// URL with a host and no query, "
            f"credentials or fragment, got {s.base_url!r}"
        )
    if s.api_key and not is_header_safe(s.api_key.get()):
        raise ConfigError(f"{where}.api_key' has characters not allowed in an HTTP header")
    for prefix in s.model_prefixes:
        if len(prefix) > MAX_PREFIX_LENGTH or not prefix.isprintable():
            raise ConfigError(
                f"{where}.model_prefixes' entries must be printable and at most {MAX_PREFIX_LENGTH} characters"
            )
    return Provider(
        name=name,
        base_url=s.base_url.rstrip("/"),
        api_key=s.api_key,
        model_prefixes=s.model_prefixes,
        key_required=s.key_required,
        free=s.free,
        stream_usage=s.stream_usage,
    )

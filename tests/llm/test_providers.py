"""The provider table: defaults, validation at start-up, the seed's errors."""

from __future__ import annotations

import pytest

from speech.errors import ConfigError, NotConfigured, NotFound
from speech.llm.providers import ProviderTable
from speech.metering.prices import PriceTable
from speech.settings import LLM_PROVIDERS, PriceSettings, load_settings


def table(**overrides: object) -> ProviderTable:
    return ProviderTable.from_settings(load_settings(environ={}, overrides=overrides).llm)


def test_defaults_are_the_seeds_providers_and_ollama() -> None:
    providers = table().providers
    assert list(providers) == list(LLM_PROVIDERS)
    assert {n: p.endpoint for n, p in providers.items()} == {
        "openai": "https://api.openai.com/v1/chat/completions",
        "deepseek": "https://api.deepseek.com/v1/chat/completions",
        "gemini": "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
        "xai": "https://api.x.ai/v1/chat/completions",
        "nearai": "https://cloud-api.near.ai/v1/chat/completions",
        "openrouter": "https://openrouter.ai/api/v1/chat/completions",
        "ollama": "http://127.0.0.1:11434/v1/chat/completions",
    }
    assert providers["deepseek"].model_prefixes == ("deepseek-chat",)
    assert providers["ollama"].free and not providers["ollama"].key_required
    assert not providers["openai"].free and providers["openai"].key_required


def test_model_validation_speaks_the_seeds_words() -> None:
    openai = table().get("openai")
    openai.check_model("gpt-4o-2024-08-06")
    openai.check_model("gpt-5-mini")
    with pytest.raises(NotFound) as info:
        openai.check_model("gpt-6")
    assert info.value.message == (
        "unsupported model: gpt-6. Supported model prefixes for openai: "
        "[gpt-4o, gpt-4o-mini, gpt-4.1, gpt-4.1-mini, gpt-4.1-nano, gpt-5, gpt-5-mini, gpt-5-nano]"
    )
    with pytest.raises(NotFound):
        openai.check_model("GPT-4o")  # model names are case-sensitive
    with pytest.raises(NotFound, match=r"^unsupported model provider: anthropic$"):
        table().get("anthropic")
    with pytest.raises(NotFound, match="unsupported model provider: ollama"):
        table(**{"llm.ollama.enabled": False}).get("ollama")
    anything = table(**{"llm.ollama.model_prefixes": [""]}).get("ollama")
    anything.check_model("qwen2.5:0.5b")


def test_keys_travel_only_in_the_authorization_header() -> None:
    openai = table(**{"llm.openai.api_key": "sk-upstream"}).get("openai")
    assert openai.headers()["authorization"] == "Bearer sk-upstream"
    assert "sk-upstream" not in repr(openai) and "sk-upstream" not in openai.endpoint
    with pytest.raises(NotConfigured, match=r"^openai API key not configured$"):
        table().get("openai").check_key()
    table().get("ollama").check_key()  # needs none
    assert "authorization" not in table().get("ollama").headers()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"llm.openai.base_url": "api.openai.com/v1"}, r"'llm\.openai\.base_url' must be an http:// or https:// URL"),
        ({"llm.xai.base_url": "ftp://x.ai"}, r"'llm\.xai\.base_url' must be"),
        ({"llm.xai.base_url": "https://x.ai/v1?key=1"}, r"no query"),
        ({"llm.xai.base_url": "https://user:pw@x.ai/v1"}, r"credentials"),
        ({"llm.xai.base_url": "http://[::1"}, r"'llm\.xai\.base_url' is not a URL"),
        ({"llm.gemini.api_key": "key with\nnewline"}, r"'llm\.gemini\.api_key' has characters not allowed"),
        ({"llm.gemini.model_prefixes": ["ok", "bad\tprefix"]}, r"'llm\.gemini\.model_prefixes' entries must be"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_setting(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        table(**overrides)


def test_a_disabled_provider_is_not_validated() -> None:
    table(**{"llm.xai.enabled": False, "llm.xai.base_url": "nonsense"})


def test_unpriced_prefixes_are_listed_for_paid_providers_only() -> None:
    prices = PriceTable.from_settings(PriceSettings())
    unpriced = table(**{"llm.ollama.model_prefixes": ["anything"]}).unpriced(prices)
    assert unpriced == [
        ("gemini", "gemini-3.5-flash"),
        ("nearai", "qwen2.5-vl-72b-instruct"),
        ("nearai", "qwen-2.5-7b-instruct"),
        ("openrouter", "meta-llama/llama-3.1-70b-instruct"),
        ("openrouter", "anthropic/claude-opus-4.1"),
    ]
    assert table().unpriced(prices, usable_only=True) == []  # no key anywhere: nothing to warn about
    keyed = table(**{"llm.gemini.api_key": "k"}).unpriced(prices, usable_only=True)
    assert keyed == [("gemini", "gemini-3.5-flash")]

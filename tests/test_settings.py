"""Settings: defaults, TOML, SPEECH_* environment, overrides, and every error."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from speech.errors import ConfigError
from speech.settings import (
    ASR_ROUTES,
    TTS_ROUTES,
    LimitSettings,
    ServerSettings,
    Settings,
    VadSettings,
    _coerce,
    load_settings,
)


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "speech.toml"
    path.write_text(text)
    return path


def config_error(match: str, **kwargs: object) -> str:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return info.value.message


# ------------------------------------------------------------------ defaults


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s == Settings()
    assert s.server == ServerSettings(host="127.0.0.1", port=8080, db="speech.db", log_level="info")
    assert s.server.ws_max_size == 16 * 1024 * 1024
    assert s.limits == LimitSettings(max_frame_bytes=1024 * 1024, max_invalid_frames=10, tts_max_chars=5000)
    assert s.vad == VadSettings(
        mode=3, frame_ms=30, start_ms=120, preroll_ms=300, silence_ms=500, tail_ms=150, max_utterance_ms=15000
    )
    assert s.local.whisper_model_dir == "" and s.local.asr_workers == 2
    assert s.routes.asr == {r: ("local",) for r in ASR_ROUTES}
    assert s.routes.tts == {r: ("local",) for r in TTS_ROUTES}
    assert s.routes.root_asr == "riva"
    assert s.prices.asr_per_minute == {"google": Decimal(50), "riva": Decimal(25), "local": Decimal(0)}
    assert s.prices.tts_per_million_chars["elevenlabs"] == Decimal(30000)
    assert s.tts.default_format["elevenlabs"] == "mp3_44100_128"


def test_default_tables_are_not_shared() -> None:
    a, b = Settings(), Settings()
    assert a.routes.asr == b.routes.asr and a.routes.asr is not b.routes.asr


# ---------------------------------------------------------------------- TOML


def test_toml_file(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        """
[server]
host = "0.0.0.0"
port = 9000

[vad]
silence_ms = 400
mode = 0

[local]
whisper_model_dir = "/models/whisper"

[routes]
root_asr = "google"

[routes.asr]
google = ["local", "local"]

[prices.asr_per_minute]
riva = 12.5
google = 1

[tts.default_format]
riva = "wav_16000"
""",
    )
    s = load_settings(path, environ={})
    assert (s.server.host, s.server.port, s.server.db) == ("0.0.0.0", 9000, "speech.db")
    assert (s.vad.silence_ms, s.vad.mode, s.vad.tail_ms) == (400, 0, 150)
    assert s.local.whisper_model_dir == "/models/whisper"
    assert s.routes.root_asr == "google"
    assert s.routes.asr["google"] == ("local", "local")
    assert s.prices.asr_per_minute["riva"] == Decimal("12.5")
    assert s.prices.asr_per_minute["google"] == Decimal(1)
    assert s.tts.default_format["riva"] == "wav_16000"
    assert isinstance(s.server.port, int)


def test_a_partial_table_keeps_the_other_defaults(tmp_path: Path) -> None:
    s = load_settings(
        toml(tmp_path, "[prices.asr_per_minute]\nriva = 20\n[routes.asr]\ngoogle = ['local']\n"), environ={}
    )
    assert s.prices.asr_per_minute == {"google": Decimal(50), "riva": Decimal(20), "local": Decimal(0)}
    assert s.routes.asr == {r: ("local",) for r in ASR_ROUTES}


def test_new_routes_can_be_added(tmp_path: Path) -> None:
    s = load_settings(
        toml(tmp_path, "[routes.asr]\nazure = ['local']\n[prices.asr_per_minute]\nazure = 0.5\n"), environ={}
    )
    assert s.routes.asr["azure"] == ("local",) and s.routes.asr["riva"] == ("local",)
    assert s.prices.asr_per_minute["azure"] == Decimal("0.5")


def test_path_as_string(tmp_path: Path) -> None:
    assert load_settings(str(toml(tmp_path, "[server]\nport = 1\n")), environ={}).server.port == 1


def test_missing_file(tmp_path: Path) -> None:
    message = config_error("config file not found", config_file=tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = toml(tmp_path, "[server\nport = 1\n")
    message = config_error("is not valid TOML", config_file=path)
    assert str(path) in message


# ------------------------------------------------------------------- environ


def test_flat_server_keys_from_the_environment() -> None:
    s = load_settings(
        environ={
            "SPEECH_PORT": "9001",
            "SPEECH_HOST": "::1",
            "SPEECH_DB": "/var/lib/speech.db",
            "SPEECH_LOG_LEVEL": "debug",
            "SPEECH_WS_MAX_SIZE": "2048",
        }
    )
    assert s.server == ServerSettings(
        host="::1", port=9001, db="/var/lib/speech.db", log_level="debug", ws_max_size=2048
    )


def test_sectioned_keys_from_the_environment() -> None:
    s = load_settings(
        environ={
            "SPEECH_VAD__SILENCE_MS": "400",
            "SPEECH_SERVER__PORT": "81",
            "SPEECH_LIMITS__MAX_INVALID_FRAMES": " 3 ",
            "SPEECH_LOCAL__BEAM_SIZE": "5",
            "SPEECH_TTS__DEFAULT_FORMAT__LOCAL": "wav_16000",
        }
    )
    assert s.vad.silence_ms == 400 and s.server.port == 81
    assert s.limits.max_invalid_frames == 3 and s.local.beam_size == 5
    assert s.tts.default_format == {"elevenlabs": "mp3_44100_128", "riva": "wav_22050", "local": "wav_16000"}


def test_env_names_are_case_insensitive_after_the_prefix() -> None:
    assert load_settings(environ={"SPEECH_vad__Mode": "1"}).vad.mode == 1


def test_engine_chains_are_comma_lists() -> None:
    s = load_settings(environ={"SPEECH_ROUTES__ASR__GOOGLE": "local", "SPEECH_ROUTES__TTS__RIVA": " local , local,"})
    assert s.routes.asr == {"google": ("local",), "riva": ("local",), "local": ("local",)}
    assert s.routes.tts["riva"] == ("local", "local")
    assert s.routes.tts["elevenlabs"] == ("local",)


def test_prices_from_the_environment_are_decimals() -> None:
    s = load_settings(environ={"SPEECH_PRICES__ASR_PER_MINUTE__RIVA": "12.5"})
    assert s.prices.asr_per_minute["riva"] == Decimal("12.5")
    assert isinstance(s.prices.asr_per_minute["riva"], Decimal)
    # the other routes keep their prices, so the documented example still starts a server
    assert s.prices.asr_per_minute["google"] == Decimal(50)
    assert s.prices.asr_per_minute["local"] == Decimal(0)


def test_other_variables_are_ignored() -> None:
    assert load_settings(environ={"PATH": "/bin", "SPEECHX": "1", "SPEECH_": "1", "speech_port": "1"}) == Settings()


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("SPEECH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPEECH_PORT", "1234")
    assert load_settings().server.port == 1234


# ---------------------------------------------------------------- precedence


def test_precedence_defaults_toml_env_overrides(tmp_path: Path) -> None:
    path = toml(tmp_path, "[server]\nport = 1001\nhost = 'toml'\ndb = 'toml.db'\n[vad]\nmode = 1\n")
    env = {"SPEECH_PORT": "1002", "SPEECH_HOST": "env", "SPEECH_VAD__MODE": "2"}
    s = load_settings(path, environ=env, overrides={"server.port": 1003})
    assert s.server.port == 1003  # overrides win
    assert s.server.host == "env"  # env over TOML
    assert s.server.db == "toml.db"  # TOML over defaults
    assert s.server.log_level == "info"  # defaults
    assert s.vad.mode == 2 and s.vad.frame_ms == 30


def test_none_overrides_are_ignored() -> None:
    s = load_settings(environ={"SPEECH_PORT": "1002"}, overrides={"server.port": None, "server.host": None})
    assert s.server.port == 1002 and s.server.host == "127.0.0.1"


def test_overrides_by_section_table() -> None:
    s = load_settings(
        environ={"SPEECH_VAD__MODE": "2"}, overrides={"vad": {"tail_ms": 0}, "limits": {"tts_max_chars": 9}}
    )
    assert (s.vad.mode, s.vad.tail_ms) == (2, 0)
    assert s.limits.tts_max_chars == 9


# -------------------------------------------------------------------- errors


def test_unknown_section() -> None:
    message = config_error(r"unknown setting 'nope'", environ={"SPEECH_NOPE__X": "1"})
    sections = "admin, elevenlabs, failover, google, limits, llm, local, prices, riva, routes, server, tts, vad"
    assert f"known here: {sections}" in message


def test_unknown_section_in_toml(tmp_path: Path) -> None:
    config_error(r"unknown setting 'sever'", config_file=toml(tmp_path, "[sever]\nport = 1\n"))


def test_unknown_key() -> None:
    message = config_error(r"unknown setting 'vad\.silence'", environ={"SPEECH_VAD__SILENCE": "400"})
    assert "silence_ms" in message


def test_unknown_key_under_a_flat_server_name() -> None:
    config_error(r"unknown setting 'port'", environ={"SPEECH_PORT__X": "1"})


def test_empty_key_after_a_section() -> None:
    config_error(r"unknown setting 'vad\.'", environ={"SPEECH_VAD__": "1"})


@pytest.mark.parametrize("name", ["SPEECH_PROT", "SPEECH_SILENCE_MS", "SPEECH_VAD"])
def test_unknown_flat_env_name(name: str) -> None:
    message = config_error(f"unknown environment setting {name}:", environ={name: "1"})
    assert (
        "SPEECH_DB, SPEECH_HOST, SPEECH_LOG_LEVEL, SPEECH_METRICS, SPEECH_METRICS_REQUIRE_ADMIN, "
        "SPEECH_PORT, SPEECH_REPLICA_ID, SPEECH_WORKERS, SPEECH_WS_MAX_SIZE"
    ) in message
    assert "SPEECH_<SECTION>__<KEY>" in message


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("abc", r"^setting 'server\.port' must be an integer, got 'abc'$"),
        ("80.5", r"^setting 'server\.port' must be an integer, got '80\.5'$"),
        ("", r"^setting 'server\.port' must be an integer, got ''$"),
        ("0x50", r"must be an integer"),
        ("65536", r"^setting 'server\.port' must be between 0 and 65535, got 65536$"),
        ("-1", r"^setting 'server\.port' must be between 0 and 65535, got -1$"),
    ],
)
def test_bad_integers_from_the_environment(value: str, match: str) -> None:
    config_error(match, environ={"SPEECH_PORT": value})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[server]\nport = 80.0\n", r"^setting 'server\.port' must be an integer, got 80\.0$"),
        ("[server]\nport = true\n", r"^setting 'server\.port' must be a number, got True$"),
        ("[server]\nport = [80]\n", r"^setting 'server\.port' must be an integer, got \[80\]$"),
        ("[server]\nws_max_size = 1023\n", r"^setting 'server\.ws_max_size' must be at least 1024, got 1023$"),
        ("[vad]\nmode = 4\n", r"^setting 'vad\.mode' must be between 0 and 3, got 4$"),
        ("[vad]\nsilence_ms = 89\n", r"^setting 'vad\.silence_ms' must be between 90 and 5000, got 89$"),
        ("[vad]\nmax_utterance_ms = 60001\n", r"'vad\.max_utterance_ms' must be between 1000 and 60000"),
        ("[limits]\nmax_invalid_frames = 0\n", r"'limits\.max_invalid_frames' must be at least 1, got 0"),
        ("[server]\nhost = 5\n", r"^setting 'server\.host' must be a string, got 5$"),
        ("server = 5\n", r"^setting 'server' must be a table$"),
        ("[routes]\nasr = 'local'\n", r"^setting 'routes\.asr' must be a table$"),
        ("[routes.asr]\ngoogle = []\n", r"^setting 'routes\.asr\.google' must be a non-empty list of names$"),
        ("[routes.asr]\ngoogle = 5\n", r"'routes\.asr\.google' must be a non-empty list of names"),
        (
            "[prices.asr_per_minute]\nriva = -1\n",
            r"'prices\.asr_per_minute\.riva' must be a finite number of at least 0",
        ),
        ("[prices.asr_per_minute]\nriva = nan\n", r"'prices\.asr_per_minute\.riva' must be a finite number"),
        ("[prices.asr_per_minute]\nriva = inf\n", r"'prices\.asr_per_minute\.riva' must be a finite number"),
        (
            "[prices.asr_per_minute]\nriva = true\n",
            r"^setting 'prices\.asr_per_minute\.riva' must be a number, got True$",
        ),
        (
            "[prices.asr_per_minute]\nriva = 'lots'\n",
            r"^setting 'prices\.asr_per_minute\.riva' must be a number, got 'lots'$",
        ),
        ("[prices]\nasr_per_minute = 5\n", r"^setting 'prices\.asr_per_minute' must be a table$"),
        ("[tts.default_format]\nriva = 1\n", r"'tts\.default_format\.riva' must be a string"),
    ],
)
def test_bad_values_in_toml(tmp_path: Path, text: str, match: str) -> None:
    config_error(match, config_file=toml(tmp_path, text))


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"SPEECH_PRICES__ASR_PER_MINUTE__RIVA": "-0.5"}, r"'prices\.asr_per_minute\.riva' must be a finite number"),
        ({"SPEECH_PRICES__ASR_PER_MINUTE__RIVA": "NaN"}, r"must be a finite number of at least 0, got 'NaN'"),
        ({"SPEECH_PRICES__TTS_PER_MILLION_CHARS__RIVA": "Infinity"}, r"'prices\.tts_per_million_chars\.riva'"),
        ({"SPEECH_PRICES__ASR_PER_MINUTE__RIVA": "12,5"}, r"must be a number, got '12,5'"),
        ({"SPEECH_ROUTES__ASR__GOOGLE": " , "}, r"'routes\.asr\.google' must be a non-empty list of names"),
        ({"SPEECH_ROUTES__ASR": "local"}, r"^setting 'routes\.asr' must be a table$"),
        ({"SPEECH_VAD__MODE": "true"}, r"^setting 'vad\.mode' must be an integer, got 'true'$"),
    ],
)
def test_bad_values_from_the_environment(env: dict[str, str], match: str) -> None:
    config_error(match, environ=env)


def test_bad_override_names_the_setting() -> None:
    config_error(r"^setting 'server\.port' must be between 0 and 65535, got 70000$", overrides={"server.port": 70000})
    config_error(r"unknown setting 'server\.prot'", overrides={"server.prot": 1})


# ---------------------------------------------------- coercions not used yet


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("1", True), ("yes", True), ("ON", True), ("False", False), ("off", False)],
)
def test_bools(value: object, expected: bool) -> None:
    assert _coerce(bool, value, "x.flag", {}) is expected


@pytest.mark.parametrize("value", ["maybe", "", 1, None])
def test_bad_bool(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^setting 'x\.flag' must be true or false, got "):
        _coerce(bool, value, "x.flag", {})


def test_floats() -> None:
    assert _coerce(float, "1.5", "x.f", {"min": 0, "max": 2}) == 1.5
    assert _coerce(float, 2, "x.f", {}) == 2.0
    with pytest.raises(ConfigError, match=r"^setting 'x\.f' must be a number, got 'fast'$"):
        _coerce(float, "fast", "x.f", {})
    with pytest.raises(ConfigError, match=r"^setting 'x\.f' must be between 0 and 2, got 2\.5$"):
        _coerce(float, 2.5, "x.f", {"min": 0, "max": 2})


# ------------------------------------------------------------ frozen, replace


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.server = ServerSettings()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.vad.mode = 0  # type: ignore[misc]


def test_replace() -> None:
    s = load_settings(environ={})
    t = s.replace("server", port=0, host="0.0.0.0")
    assert (t.server.port, t.server.host) == (0, "0.0.0.0")
    assert s.server.port == 8080  # the original is untouched
    assert t.vad is s.vad and t.routes is s.routes
    assert t.replace("vad", mode=1).vad.mode == 1
    with pytest.raises(TypeError):
        s.replace("server", nope=1)


def test_admin_token_from_file_and_minimum_length(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("0123456789abcdef-long-enough\n")
    s = load_settings(environ={"SPEECH_ADMIN__TOKEN_FILE": str(token)})
    assert s.admin.token.get() == "0123456789abcdef-long-enough"
    assert "0123456789abcdef" not in repr(s)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_settings(environ={"SPEECH_ADMIN__TOKEN": "short"})
    assert not load_settings(environ={}).admin.token  # no default credential


def test_llm_price_table_has_the_seed_defaults() -> None:
    p = load_settings(environ={}).prices
    assert p.llm_input_per_million_tokens["gpt-4o"] == 42500 and p.llm_output_per_million_tokens["gpt-4o"] == 170000
    assert p.llm_input_per_million_tokens["deepseek-chat"] == 1400


# ---------------------------------------------------------------- [llm]


def test_llm_defaults() -> None:
    llm = load_settings(environ={}).llm
    assert (llm.connect_timeout_s, llm.read_timeout_s, llm.total_timeout_s) == (5.0, 120.0, 600.0)
    assert llm.default_max_tokens == 4096
    assert llm.openai.base_url == "https://api.openai.com/v1" and not llm.openai.api_key
    assert llm.gemini.model_prefixes[:2] == ("gemini-3.5-flash", "gemini-3.1-pro-preview")
    assert llm.ollama.free and not llm.ollama.key_required


def test_llm_provider_tables_keep_their_own_defaults(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        """
[llm]
read_timeout_s = 30
default_max_tokens = 512

[llm.openai]
api_key = "sk-upstream-openai"

[llm.ollama]
base_url = "http://gpu-box:11434/v1"
model_prefixes = ["qwen2.5", ""]

[prices.llm_input_per_million_tokens]
"gpt-4o" = 40000
"my-model" = 1.5
[prices.llm_output_per_million_tokens]
"my-model" = 3
""",
    )
    s = load_settings(path, environ={})
    assert s.llm.read_timeout_s == 30 and s.llm.default_max_tokens == 512 and s.llm.connect_timeout_s == 5
    assert s.llm.openai.api_key.get() == "sk-upstream-openai"
    assert s.llm.openai.base_url == "https://api.openai.com/v1"  # the provider's default, not the class's ""
    assert s.llm.openai.model_prefixes[0] == "gpt-4o"
    assert s.llm.ollama.base_url == "http://gpu-box:11434/v1" and s.llm.ollama.model_prefixes == ("qwen2.5", "")
    assert s.llm.ollama.free and not s.llm.ollama.key_required
    assert s.prices.llm_input_per_million_tokens["gpt-4o"] == 40000
    assert s.prices.llm_output_per_million_tokens["gpt-4o"] == 170000
    assert s.prices.llm_input_per_million_tokens["my-model"] == Decimal("1.5")
    assert "sk-upstream-openai" not in repr(s)


def test_llm_from_the_environment_and_key_files(tmp_path: Path) -> None:
    key_file = tmp_path / "deepseek.key"
    key_file.write_text("sk-deepseek-from-file\n")
    s = load_settings(
        environ={
            "SPEECH_LLM__OPENAI__API_KEY": "sk-env",
            "SPEECH_LLM__DEEPSEEK__API_KEY_FILE": str(key_file),
            "SPEECH_LLM__OLLAMA__MODEL_PREFIXES": "llama3.2, qwen2.5",
            "SPEECH_LLM__XAI__ENABLED": "false",
            "SPEECH_LLM__TOTAL_TIMEOUT_S": "90",
        }
    )
    assert s.llm.openai.api_key.get() == "sk-env" and s.llm.deepseek.api_key.get() == "sk-deepseek-from-file"
    assert s.llm.ollama.model_prefixes == ("llama3.2", "qwen2.5")
    assert not s.llm.xai.enabled and s.llm.total_timeout_s == 90
    # An explicit key wins over its file.
    both = load_settings(
        environ={"SPEECH_LLM__DEEPSEEK__API_KEY": "sk-direct", "SPEECH_LLM__DEEPSEEK__API_KEY_FILE": str(key_file)}
    )
    assert both.llm.deepseek.api_key.get() == "sk-direct"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"SPEECH_LLM__OPENAI__NOPE": "1"}, r"unknown setting 'llm\.openai\.nope' \(known here: api_key, api_key_file"),
        ({"SPEECH_LLM__ANTHROPIC__API_KEY": "k"}, r"unknown setting 'llm\.anthropic'"),
        ({"SPEECH_LLM__READ_TIMEOUT_S": "0"}, r"'llm\.read_timeout_s' must be between 1 and 3600, got 0\.0"),
        ({"SPEECH_LLM__DEFAULT_MAX_TOKENS": "0"}, r"'llm\.default_max_tokens' must be between 1 and"),
        ({"SPEECH_LLM__OPENAI__MODEL_PREFIXES": " , "}, r"'llm\.openai\.model_prefixes' must be a non-empty list"),
        ({"SPEECH_LLM__OLLAMA__FREE": "maybe"}, r"'llm\.ollama\.free' must be true or false"),
        ({"SPEECH_LLM__OPENAI": "x"}, r"^setting 'llm\.openai' must be a table$"),
        ({"SPEECH_LLM__GEMINI__API_KEY_FILE": "/nonexistent/key"}, r"'llm\.gemini\.api_key_file': cannot read"),
    ],
)
def test_bad_llm_settings(env: dict[str, str], match: str) -> None:
    config_error(match, environ=env)


def test_an_empty_llm_key_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    config_error(r"'llm\.openai\.api_key_file': .* is empty", environ={"SPEECH_LLM__OPENAI__API_KEY_FILE": str(empty)})

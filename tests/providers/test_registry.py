"""The engine factories: each imports its adapter when first called and builds
it from its own settings section (cloud adapters open no connection here)."""

from __future__ import annotations

import dataclasses

import pytest

from speech.errors import ConfigError
from speech.providers.elevenlabs.tts import ElevenLabsSynthesizer
from speech.providers.google.asr import GoogleRecognizer
from speech.providers.registry import ASR_FACTORIES, TTS_FACTORIES, load_engines
from speech.providers.riva.asr import RivaRecognizer
from speech.providers.riva.tts import RivaSynthesizer
from speech.settings import GoogleSettings, RivaSettings, RouteSettings, Settings


def cloud_settings() -> Settings:
    routes = RouteSettings(
        asr={"riva": ("riva",), "google": ("google", "riva")},
        tts={"riva": ("riva",), "elevenlabs": ("elevenlabs", "riva")},
        root_asr="riva",
    )
    return dataclasses.replace(
        Settings(),
        riva=RivaSettings(url="riva.invalid:50051"),
        google=GoogleSettings(url="google.invalid:443"),
        routes=routes,
    )


def test_each_factory_builds_its_engine_from_its_section() -> None:
    settings = cloud_settings()
    built = {
        **{f"asr {name}": ASR_FACTORIES[name](settings) for name in ("riva", "google")},
        **{f"tts {name}": TTS_FACTORIES[name](settings) for name in ("riva", "elevenlabs")},
    }
    kinds = {key: type(engine) for key, engine in built.items()}
    assert kinds == {
        "asr riva": RivaRecognizer,
        "asr google": GoogleRecognizer,
        "tts riva": RivaSynthesizer,
        "tts elevenlabs": ElevenLabsSynthesizer,
    }
    assert built["asr riva"].description == "riva (riva.invalid:50051)"
    assert built["asr google"].description == "google (google.invalid:443)"
    assert sorted(ASR_FACTORIES) == ["google", "local", "riva"]
    assert sorted(TTS_FACTORIES) == ["elevenlabs", "local", "riva"]
    for engine in built.values():
        engine.close()


def test_load_engines_builds_each_named_engine_once() -> None:
    engines = load_engines(cloud_settings())
    assert sorted(engines.asr) == ["google", "riva"] and sorted(engines.tts) == ["elevenlabs", "riva"]
    assert (
        engines.recognizer("google").description
        == "google [google (google.invalid:443)] -> riva [riva (riva.invalid:50051)]"
    )
    engines.close()


def test_an_unknown_engine_names_the_setting() -> None:
    routes = RouteSettings(asr={"riva": ("nope",)}, tts={}, root_asr="riva")
    with pytest.raises(ConfigError, match=r"routes\.asr\.riva.*unknown engine 'nope'"):
        load_engines(dataclasses.replace(Settings(), routes=routes))

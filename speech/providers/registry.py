"""Builds the engines named in the route chains and answers "who serves this route".

Engine names: ``local`` (embedded faster-whisper / piper), ``riva``,
``google`` (ASR only) and ``elevenlabs`` (TTS only). Each public route maps
to an ordered chain of them (``[routes]`` settings), wrapped in a
:mod:`failover <speech.providers.failover>` layer. Cloud adapters are
imported only when a chain names them, so the ``cloud`` extra stays optional.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from speech.errors import ConfigError, NotFound
from speech.providers.base import Recognizer, Synthesizer
from speech.providers.failover import EngineHealth, FailoverRecognizer, FailoverSynthesizer
from speech.settings import Settings


def _lazy(path: str, section: str) -> Callable[[Settings], Any]:
    """A factory that imports the engine class at ``path`` ("module.Class") when
    first called and builds it from the settings section named ``section``."""
    module, _, name = path.rpartition(".")

    def build(settings: Settings) -> Any:
        return getattr(importlib.import_module(module), name)(getattr(settings, section))

    build.__name__ = build.__qualname__ = f"build_{name}"
    return build


ASR_FACTORIES: dict[str, Callable[[Settings], Recognizer]] = {
    "local": _lazy("speech.providers.local.asr.WhisperRecognizer", "local"),
    "riva": _lazy("speech.providers.riva.asr.RivaRecognizer", "riva"),
    "google": _lazy("speech.providers.google.asr.GoogleRecognizer", "google"),
}
TTS_FACTORIES: dict[str, Callable[[Settings], Synthesizer]] = {
    "local": _lazy("speech.providers.local.tts.PiperSynthesizer", "local"),
    "riva": _lazy("speech.providers.riva.tts.RivaSynthesizer", "riva"),
    "elevenlabs": _lazy("speech.providers.elevenlabs.tts.ElevenLabsSynthesizer", "elevenlabs"),
}


def check_routes(settings: Settings) -> None:
    """Fail at start-up, naming the setting, if a chain names an unknown engine."""
    for kind, chains, known in (
        ("asr", settings.routes.asr, ASR_FACTORIES),
        ("tts", settings.routes.tts, TTS_FACTORIES),
    ):
        for route, chain in chains.items():
            for engine in chain:
                if engine not in known:
                    raise ConfigError(
                        f"setting 'routes.{kind}.{route}' names unknown engine '{engine}' "
                        f"(known: {', '.join(sorted(known))})"
                    )
    if settings.routes.root_asr not in settings.routes.asr:
        raise ConfigError(f"setting 'routes.root_asr' names unknown route '{settings.routes.root_asr}'")


@dataclass
class Engines:
    settings: Settings
    asr: dict[str, Recognizer] = field(default_factory=dict)
    tts: dict[str, Synthesizer] = field(default_factory=dict)
    health: EngineHealth = field(init=False)
    _asr_routes: dict[str, FailoverRecognizer] = field(default_factory=dict, init=False)
    _tts_routes: dict[str, FailoverSynthesizer] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.health = EngineHealth(self.settings.failover.cooldown_s)

    def recognizer(self, route: str) -> FailoverRecognizer:
        chain = self.settings.routes.asr.get(route)
        if chain is None:
            raise NotFound(f"unsupported ASR provider: {route}")
        if route not in self._asr_routes:
            self._asr_routes[route] = FailoverRecognizer(route, [self.asr[n] for n in chain], self.health)
        return self._asr_routes[route]

    def synthesizer(self, route: str) -> FailoverSynthesizer:
        chain = self.settings.routes.tts.get(route)
        if chain is None:
            raise NotFound(f"unsupported TTS provider: {route}")
        if route not in self._tts_routes:
            self._tts_routes[route] = FailoverSynthesizer(route, [self.tts[n] for n in chain], self.health)
        return self._tts_routes[route]

    def describe(self) -> list[str]:
        """One banner line per route: which engines serve it, in order."""
        lines = []
        for route in self.settings.routes.asr:
            lines.append(f"ASR /api/core/{route}/asr -> {self.recognizer(route).description}")
        lines.append(f"ASR / (root) -> route '{self.settings.routes.root_asr}'")
        for route in self.settings.routes.tts:
            lines.append(f"TTS /api/core/{route}/tts -> {self.synthesizer(route).description}")
        return lines

    async def aclose(self) -> None:
        for engine in [*self.asr.values(), *self.tts.values()]:
            closer = getattr(engine, "aclose", None) or getattr(engine, "close", None)
            if closer is None:
                continue
            result = closer()
            if inspect.isawaitable(result):
                await result

    def close(self) -> None:
        """Synchronous close of the engines that need no event loop (local pools)."""
        for engine in [*self.asr.values(), *self.tts.values()]:
            closer = getattr(engine, "close", None)
            if closer is not None and not inspect.iscoroutinefunction(closer):
                closer()


def load_engines(settings: Settings) -> Engines:
    """Blocking: builds every engine some chain names (run it off the event loop).
    Cloud engines open no connection here; they connect on first use."""
    check_routes(settings)
    engines = Engines(settings)
    for chain in settings.routes.asr.values():
        for name in chain:
            if name not in engines.asr:
                engines.asr[name] = ASR_FACTORIES[name](settings)
    for chain in settings.routes.tts.values():
        for name in chain:
            if name not in engines.tts:
                engines.tts[name] = TTS_FACTORIES[name](settings)
    return engines

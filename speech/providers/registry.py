"""Builds the engines named in the route chains and answers "who serves this route".

Issue 2 ships the embedded ``local`` engines; cloud adapters register here
under their own names and plug into the same chains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from speech.errors import ConfigError, NotFound
from speech.providers.base import Recognizer, Synthesizer
from speech.settings import Settings


def _local_asr(settings: Settings) -> Recognizer:
    from speech.providers.local.asr import WhisperRecognizer

    return WhisperRecognizer(settings.local)


def _local_tts(settings: Settings) -> Synthesizer:
    from speech.providers.local.tts import PiperSynthesizer

    return PiperSynthesizer(settings.local)


ASR_FACTORIES: dict[str, Callable[[Settings], Recognizer]] = {"local": _local_asr}
TTS_FACTORIES: dict[str, Callable[[Settings], Synthesizer]] = {"local": _local_tts}


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

    def recognizer(self, route: str) -> Recognizer:
        chain = self.settings.routes.asr.get(route)
        if chain is None:
            raise NotFound(f"unsupported ASR provider: {route}")
        return self.asr[chain[0]]

    def synthesizer(self, route: str) -> Synthesizer:
        chain = self.settings.routes.tts.get(route)
        if chain is None:
            raise NotFound(f"unsupported TTS provider: {route}")
        return self.tts[chain[0]]

    def describe(self) -> list[str]:
        """One banner line per route: which engine serves it."""
        lines = []
        for route, chain in self.settings.routes.asr.items():
            lines.append(f"ASR /api/core/{route}/asr -> {' -> '.join(chain)} ({self.asr[chain[0]].description})")
        lines.append(f"ASR / (root) -> route '{self.settings.routes.root_asr}'")
        for route, chain in self.settings.routes.tts.items():
            lines.append(f"TTS /api/core/{route}/tts -> {' -> '.join(chain)} ({self.tts[chain[0]].description})")
        return lines

    def close(self) -> None:
        for engine in [*self.asr.values(), *self.tts.values()]:
            closer = getattr(engine, "close", None)
            if closer is not None:
                closer()


def load_engines(settings: Settings) -> Engines:
    """Blocking: loads every engine some chain names (run it off the event loop)."""
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

"""Shared fixtures: the real local engines (loaded once) and a real gateway
served by uvicorn on a free loopback port, with its own SQLite ledger."""

from __future__ import annotations

import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from speech.api.app import create_app
from speech.metering.factory import open_ledger
from speech.metering.ledger import Ledger
from speech.metering.records import UsageRecord
from speech.providers.registry import Engines, load_engines
from speech.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SHARED_SAMPLES = ROOT.parent / "shared" / "samples"


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return w.readframes(w.getnframes()), w.getframerate()


@pytest.fixture(scope="session")
def engines() -> Iterator[Engines]:
    eng = load_engines(load_settings(environ={}))
    yield eng
    eng.close()


def with_local(settings: Settings, local: Engines) -> Engines:
    """Engines for ``settings``: the already loaded local ones, plus fresh
    instances of every other engine the routes name."""
    from speech.providers.registry import ASR_FACTORIES, TTS_FACTORIES

    out = Engines(settings)
    for chain in settings.routes.asr.values():
        for name in chain:
            out.asr.setdefault(name, Shared(local.asr[name]) if name == "local" else ASR_FACTORIES[name](settings))
    for chain in settings.routes.tts.values():
        for name in chain:
            out.tts.setdefault(name, Shared(local.tts[name]) if name == "local" else TTS_FACTORIES[name](settings))
    return out


class Shared:
    """A session-wide engine lent to one server: everything passes through
    except closing, which belongs to the session fixture."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("close", "aclose"):
            raise AttributeError(name)
        return getattr(self._inner, name)


@dataclass
class RunningServer:
    settings: Settings
    port: int
    db: str
    server: uvicorn.Server
    thread: threading.Thread
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str = "/api/core/local/asr", **query: Any) -> str:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{qs}" if qs else "")

    async def create_key(self, name: str = "test", balance_uomcu: int = 1_000_000_000) -> str:
        ledger = await open_ledger(self.db)
        try:
            key, _ = await ledger.create_key(name, balance_uomcu)
        finally:
            await ledger.close()
        return key

    async def ledger(self) -> Ledger:
        return await open_ledger(self.db)

    async def usage(self) -> list[UsageRecord]:
        """Every usage record in this server's ledger, newest first."""
        ledger = await self.ledger()
        try:
            return await ledger.usage()
        finally:
            await ledger.close()


def start_server(
    settings: Settings, engines: Engines | None, close_engines: bool = False, port: int = 0
) -> RunningServer:
    """``port`` 0 picks a free port; another reuses one (a gateway restart)."""
    app = create_app(settings, engines=engines, close_engines=close_engines)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        ws_max_size=settings.server.ws_max_size,
        log_level="info",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(settings, port, settings.server.db, server, thread)


def stop_server(srv: RunningServer) -> None:
    srv.server.should_exit = True
    srv.thread.join(timeout=10)


@pytest.fixture
def make_server(tmp_path: Path, engines: Engines) -> Iterator[Any]:
    """Factory: make_server(**section_overrides) -> RunningServer (stopped at teardown)."""
    started: list[RunningServer] = []

    def make(overrides: dict[str, Any] | None = None, *, with_engines: Any = True) -> RunningServer:
        """``with_engines``: True = the shared local engines plus any cloud
        engines the settings' routes name (built fresh for this server);
        an Engines object = exactly those; False = load at start-up."""
        over = {"server.db": str(tmp_path / f"ledger{len(started)}.db"), **(overrides or {})}
        settings = load_settings(environ={}, overrides=over)
        if with_engines is True:
            eng: Engines | None = with_local(settings, engines)
        else:
            eng = with_engines or None
        srv = start_server(settings, eng, close_engines=with_engines is True)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        stop_server(srv)


@pytest.fixture
def server(make_server: Any) -> RunningServer:
    return make_server()


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[Any]:
    """The loopback OpenAI Chat Completions upstream (tests/llm/fake_upstream.py)."""
    from tests.llm.fake_upstream import FakeLLM

    fake = FakeLLM()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_llm(fake_llm_server: Any) -> Iterator[Any]:
    """The shared fake upstream, reset before and after the test."""
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()

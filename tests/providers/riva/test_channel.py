"""Channels of the Riva adapters: one per event loop, servers and adapters
on the same or different loops and threads, TLS, metadata and the
missing-extra error. The shared pieces themselves (the per-loop cache, the
masked-status recovery) are tested in tests/providers/test_grpc_common.py."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from speech.errors import ConfigError, UpstreamUnavailable
from speech.providers.base import RecognitionConfig, SynthesisRequest
from speech.providers.riva import channel as riva_channel
from speech.providers.riva.asr import RivaRecognizer
from speech.providers.riva.tts import RivaSynthesizer
from speech.settings import RivaSettings, Secret
from tests.providers.riva.conftest import settings_for
from tests.providers.riva.fake_riva import FakeRiva, fake_riva_in_thread, final_text, tone

AUDIO = bytes(range(256)) * 50


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def final_of(rec: RivaRecognizer, audio: bytes = AUDIO) -> str:
    texts = [t.text async for t in rec.recognize(chunks(audio), RecognitionConfig()) if t.is_final]
    assert len(texts) == 1
    return texts[0]


def test_metadata() -> None:
    assert riva_channel.metadata(RivaSettings(url="x:1"), "") == ()
    md = riva_channel.metadata(RivaSettings(url="x:1", api_key=Secret("s3cret")), "fn")
    assert md == (("authorization", "Bearer s3cret"), ("function-id", "fn"))


def test_missing_stubs_name_the_cloud_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(riva_channel, "_STUBS_ERROR", ImportError("No module named 'riva'"))
    for engine in (RivaRecognizer, RivaSynthesizer):
        with pytest.raises(ConfigError, match=r"speech-gateway\[cloud\]"):
            engine(RivaSettings(url="x:1"))


def test_construction_does_no_io() -> None:
    rec = RivaRecognizer(RivaSettings(url="nowhere.invalid:50051"))  # no loop, no DNS, no connect
    assert rec.name == "riva" and rec.description == "riva (nowhere.invalid:50051)"
    rec.close()


async def test_one_channel_per_loop_is_reused_and_reopened_after_aclose(riva: FakeRiva) -> None:
    rec = RivaRecognizer(settings_for(riva.url))
    await final_of(rec)
    first = rec._channels.channel()
    await final_of(rec)
    assert rec._channels.channel() is first
    await rec.aclose()
    assert await final_of(rec) == final_text(AUDIO)  # a new channel after aclose
    assert rec._channels.channel() is not first
    await rec.aclose()


async def test_server_on_the_test_loop() -> None:
    """Server and adapters on one loop: nothing may block it."""
    fake = FakeRiva()
    await fake.start()
    rec = RivaRecognizer(settings_for(fake.url))
    syn = RivaSynthesizer(settings_for(fake.url, tts_streaming=True))
    try:
        assert await final_of(rec) == final_text(AUDIO)
        audio = b"".join([c.data async for c in syn.synthesize(SynthesisRequest(text="hi there"))])
        assert audio == tone("hi there", 22050)
    finally:
        await rec.aclose()
        await syn.aclose()
        await fake.stop()


async def test_one_adapter_used_from_several_loops_and_threads(riva: FakeRiva) -> None:
    """The gateway's tests run several uvicorn threads sharing engines; each
    loop gets its own channel and all of them work at once."""
    rec = RivaRecognizer(settings_for(riva.url))
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            results[n] = asyncio.run(final_of(rec, AUDIO[: 1000 * (n + 1)]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    here = await final_of(rec)
    await asyncio.to_thread(lambda: [t.join(10) for t in threads])
    assert not errors
    assert here == final_text(AUDIO)
    assert results == {n: final_text(AUDIO[: 1000 * (n + 1)]) for n in range(3)}
    await rec.aclose()


def _self_signed(tmp: Path) -> tuple[bytes, bytes]:
    x509 = pytest.importorskip("cryptography.x509", reason="TLS test needs the cryptography package")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


async def test_tls(tmp_path: Path) -> None:
    key_pem, cert_pem = _self_signed(tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert_pem)
    with fake_riva_in_thread(tls=(key_pem, cert_pem)) as fake:
        fake.faults.token = "tok"
        trusted = RivaRecognizer(settings_for(fake.url, tls=True, ca_file=str(ca), api_key=Secret("tok")))
        untrusted = RivaSynthesizer(settings_for(fake.url, tls=True, connect_timeout_s=0.3))  # system roots
        plain = RivaRecognizer(settings_for(fake.url, connect_timeout_s=0.3))
        try:
            assert await final_of(trusted) == final_text(AUDIO)
            with pytest.raises(UpstreamUnavailable, match="^Failed to connect to riva server$"):
                await anext(untrusted.synthesize(SynthesisRequest(text="hi")))
            with pytest.raises(UpstreamUnavailable):
                await final_of(plain)
        finally:
            for engine in (trusted, untrusted, plain):
                await engine.aclose()


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    rec = RivaRecognizer(RivaSettings(url="127.0.0.1:1", tls=True, ca_file=str(tmp_path / "nope.pem")))

    async def use() -> Any:
        return await final_of(rec)

    with pytest.raises(ConfigError, match="nope.pem"):
        asyncio.run(use())

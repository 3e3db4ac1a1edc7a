"""Service-account credentials: a throwaway RSA key, a loopback token endpoint,
and a bearer token that must reach the fake Google server."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from speech.errors import NotConfigured, UpstreamAuthError, UpstreamUnavailable
from speech.providers.google import auth
from speech.providers.google.asr import GoogleRecognizer
from speech.settings import Secret
from tests.providers.google.fake_google import FakeGoogle, closed_port
from tests.providers.google.support import chunks, collect, noise, settings_for

rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa", reason="cryptography is not installed")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")

SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass
class TokenServer:
    """A tiny OAuth2 token endpoint: answers each JWT-bearer grant with the next token."""

    url: str = ""
    expires_in: int = 3600
    status: int = 200
    assertions: list[str] = field(default_factory=list)

    def token(self) -> str:
        return f"token-{len(self.assertions)}"


@pytest.fixture
def token_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = TokenServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            form = urllib.parse.parse_qs(body.decode())
            assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
            state.assertions.append(form["assertion"][0])
            if state.status == 200:
                answer: dict[str, Any] = {
                    "access_token": state.token(),
                    "expires_in": state.expires_in,
                    "token_type": "Bearer",
                }
            else:
                answer = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            data = json.dumps(answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/token"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, rsa_key: Any, token_server: TokenServer) -> Path:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "gateway@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_server.url,
            }
        )
    )
    return path


def _set_token_uri(key_file: Path, url: str) -> None:
    data = json.loads(key_file.read_text())
    data["token_uri"] = url
    key_file.write_text(json.dumps(data))


def _recognizer(fake: FakeGoogle, key_file: Path | str, connect_timeout_s: float = 2.0) -> GoogleRecognizer:
    """Token requests get a roomier timeout than the loopback gRPC calls (no timing is asserted)."""
    settings = settings_for(
        fake.url, api_key=Secret(), credentials_file=str(key_file), connect_timeout_s=connect_timeout_s
    )
    return GoogleRecognizer(settings)


async def test_bearer_token_reaches_google(
    fake: FakeGoogle, key_file: Path, token_server: TokenServer, rsa_key: Any
) -> None:
    fake.faults.require_bearer = "token-1"
    rec = _recognizer(fake, key_file)
    for _ in range(3):
        out = await collect(rec, chunks(noise(0.2)))
        assert out[-1].is_final
    await rec.aclose()
    assert len(token_server.assertions) == 1  # a fresh token is reused
    assert all(s.metadata["authorization"] == "Bearer token-1" for s in fake.streams)
    assert all("x-goog-api-key" not in s.metadata for s in fake.streams)
    # The grant was signed with the service account's key, for the cloud-platform scope.
    from google.auth import jwt

    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(token_server.assertions[0], certs=public, audience="https://oauth2.googleapis.com/token")
    assert claims["scope"] == SCOPE
    assert claims["iss"] == "gateway@test-project.iam.gserviceaccount.com"


async def test_token_is_refreshed_before_it_expires(
    fake: FakeGoogle, key_file: Path, token_server: TokenServer
) -> None:
    token_server.expires_in = 120  # inside google-auth's 3 min 45 s refresh margin: never FRESH
    rec = _recognizer(fake, key_file)
    for _ in range(2):
        await collect(rec, chunks(noise(0.2)))
    await rec.aclose()
    assert len(token_server.assertions) == 2
    assert [s.metadata["authorization"] for s in fake.streams] == ["Bearer token-1", "Bearer token-2"]


async def test_refused_grant_is_an_auth_error(fake: FakeGoogle, key_file: Path, token_server: TokenServer) -> None:
    token_server.status = 400
    with pytest.raises(UpstreamAuthError) as info:
        await collect(_recognizer(fake, key_file), chunks(noise(0.2)))
    assert not info.value.retryable
    assert fake.streams == []


async def test_unreachable_token_server_is_retryable(
    fake: FakeGoogle, key_file: Path, token_server: TokenServer
) -> None:
    _set_token_uri(key_file, f"http://127.0.0.1:{closed_port()}/token")
    with pytest.raises(UpstreamUnavailable, match="Failed to connect to google token server") as info:
        await collect(_recognizer(fake, key_file), chunks(noise(0.2)))
    assert info.value.retryable
    assert fake.streams == []


def test_refresh_errors_are_classified_by_googles_retryable_flag() -> None:
    from google.auth.exceptions import RefreshError

    assert type(auth._refresh_error(RefreshError("server_error", retryable=True))) is UpstreamUnavailable
    assert type(auth._refresh_error(RefreshError("invalid_grant"))) is UpstreamAuthError


async def test_token_rejected_by_google(fake: FakeGoogle, key_file: Path, token_server: TokenServer) -> None:
    fake.faults.require_bearer = "some-other-token"
    rec = _recognizer(fake, key_file)
    with pytest.raises(UpstreamAuthError):
        await collect(rec, chunks(noise(0.2)))
    await rec.aclose()


@pytest.mark.parametrize("content", [None, "{}", "not json"], ids=["missing", "empty", "garbage"])
async def test_unusable_key_file_is_not_configured(fake: FakeGoogle, tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(NotConfigured, match="google credentials file"):
        await collect(_recognizer(fake, path), chunks(noise(0.2)))

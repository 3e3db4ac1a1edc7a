"""The web console in a real browser, as a person uses it: headless Chromium
with its fake microphone playing ``samples/hello_robot.wav`` (looped), against
the real gateway (uvicorn on port 0, faster-whisper and piper)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.api.streaming import normalize, wer
from tests.browser.conftest import LogLines, launch, screenshot, severe_logs, text, wait_for
from tests.conftest import SAMPLES, RunningServer, start_server, stop_server, with_local

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MANIFEST = {m["file"]: m for m in json.loads((SAMPLES / "manifest.json").read_text())}
SPOKEN = MANIFEST["hello_robot.wav"]["transcript"]  # what the fake microphone says, over and over
KEY_WORDS = {"robot", "turn", "left", "walk", "kitchen", "door"}
ADMIN = "admin-token-0123456789abcdef"


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def state(driver: Any, selector: str) -> str:
    return str(by_css(driver, selector).get_attribute("data-state"))


def select(driver: Any, selector: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    wait_for(driver, lambda: any(o.get_attribute("value") == value for o in all_css(driver, f"{selector} option")))
    Select(by_css(driver, selector)).select_by_value(value)


def fill(driver: Any, selector: str, value: str) -> None:
    field = by_css(driver, selector)
    field.clear()
    field.send_keys(value)


def open_console(driver: Any, srv: RunningServer, view: str, key: str | None = None) -> None:
    driver.get(f"{srv.http}/console/#{view}")
    wait_for(driver, lambda: driver.execute_script("return document.body.dataset.view") == view, what=view)
    wait_for(driver, lambda: state(driver, "#gateway-status") == "ok", what="the gateway's routes")
    if key is not None:
        enter_key(driver, key)


def enter_key(driver: Any, key: str, expect: str = "ok") -> None:
    fill(driver, "#api-key", key)
    by_css(driver, "#key-form button[type=submit]").click()
    wait_for(driver, lambda: state(driver, "#key-status") == expect, what=f"key status {expect}")


def finals(driver: Any) -> list[str]:
    return [e.text for e in all_css(driver, "#transcript .final .text")]


def heard(driver: Any) -> list[str]:
    """Finals that are the sample's sentence, allowing a misheard word or two."""
    return [t for t in finals(driver) if wer(SPOKEN, t) <= 0.2 and len(KEY_WORDS & set(normalize(t).split())) >= 5]


def new_key(srv: RunningServer, balance_uomcu: int = 100_000_000) -> str:
    return asyncio.run(srv.create_key(balance_uomcu=balance_uomcu))


async def _usage(srv: RunningServer) -> tuple[list[Any], int]:
    ledger = await srv.ledger()
    try:
        records = await ledger.usage(limit=1000)
        balance = await ledger.balance(records[0].account_id) if records else 0
        return records, balance
    finally:
        await ledger.close()


def stop_mic(driver: Any) -> None:
    by_css(driver, "#mic-stop").click()
    wait_for(driver, lambda: state(driver, "#mic-status") == "idle", what="the stream to close")


# ---------------------------------------------------------------- microphone and account


def test_spoken_words_appear_and_the_usage_chart_reflects_the_stream(
    chrome: Any, make_server: Any, gateway_logs: LogLines
) -> None:
    srv = make_server()
    gateway_logs.attach()
    key = new_key(srv)
    open_console(chrome, srv, "mic", key)
    # The key is kept in sessionStorage only, and the field is emptied.
    storage = chrome.execute_script(
        "return [sessionStorage.getItem('speech.apiKey'), localStorage.length, document.cookie]"
    )
    assert storage == [key, 0, ""] and by_css(chrome, "#api-key").get_attribute("value") == ""
    select(chrome, "#asr-route", "google")  # priced at 50 OMCU a minute
    by_css(chrome, "#mic-start").click()
    levels: list[int] = []

    def spoken_words_appeared() -> bool:
        levels.append(int(by_css(chrome, "#mic-level").get_attribute("data-level")))
        return len(heard(chrome)) >= 2

    wait_for(chrome, spoken_words_appeared, timeout=60, what=f"two finals like {SPOKEN!r}")
    assert state(chrome, "#mic-status") == "connected"
    assert int(by_css(chrome, "#interim").get_attribute("data-count") or 0) > 0  # interim text while speaking
    assert max(levels) > 40  # the level meter moved
    assert "OMCU" in text(chrome, "#mic-billed")
    screenshot(chrome, "mic")
    stop_mic(chrome)
    summary = text(chrome, "#mic-billed")
    assert summary.startswith("Stream closed:"), summary

    records, balance = asyncio.run(_usage(srv))
    assert records and {r.kind for r in records} == {"asr"} and all(r.provider == "google" for r in records)
    assert f"{len(records)} utterance(s)" in summary
    chrome.find_element("link text", "Account").click()
    wait_for(chrome, lambda: state(chrome, "#account-status") == "ready", what="the account view")
    today = datetime.now(UTC).date().isoformat()

    def day_total(chart: str) -> float:
        return float(
            chrome.execute_script(
                "const g = document.querySelector(arguments[0] + ` g.day[data-day='${arguments[1]}']`);"
                "return g ? g.dataset.total : -1;",
                chart,
                today,
            )
        )

    minutes = sum(r.audio_ms or 0 for r in records) / 60_000
    cost = sum(r.cost_uomcu for r in records) / 1e6
    assert day_total("#chart-asr") == pytest.approx(minutes, rel=1e-9) and minutes > 0.1
    assert day_total("#chart-cost") == pytest.approx(cost, rel=1e-9) and cost > 0
    assert day_total("#chart-tts") == 0
    bars = all_css(chrome, f"#chart-asr g.day[data-day='{today}'] rect.bar")
    assert len(bars) == 1 and float(bars[0].get_attribute("height")) > 50  # the day's bar is drawn
    assert (
        int(by_css(chrome, "#balance-amount").get_attribute("data-uomcu"))
        == balance
        == 100_000_000 - sum(r.cost_uomcu for r in records)
    )
    rows = all_css(chrome, "#usage-rows tr")
    assert len(rows) == min(20, len(records)) and all(r.get_attribute("data-kind") == "asr" for r in rows)
    assert "google" in rows[0].text
    screenshot(chrome, "account")
    assert severe_logs(chrome) == []
    # The websocket carried the key in its query string; the logs never show it.
    assert (
        "api_key=[REDACTED]" in gateway_logs.text
        and key not in gateway_logs.text
        and key.split("_", 2)[2] not in gateway_logs.text
    )


def test_reconnects_by_itself_when_the_connection_drops(chrome: Any, make_server: Any, engines: Any) -> None:
    srv = make_server()
    key = new_key(srv)
    open_console(chrome, srv, "mic", key)
    by_css(chrome, "#mic-start").click()
    wait_for(chrome, lambda: heard(chrome), timeout=60, what="a first final")
    # The gateway goes away (its websockets close with 1012) and comes back on the same port.
    stop_server(srv)
    wait_for(chrome, lambda: state(chrome, "#mic-status") == "reconnecting", what="the page to notice the drop")
    assert "Reconnecting" in text(chrome, "#banner-text")
    restarted = start_server(srv.settings, with_local(srv.settings, engines), close_engines=True, port=srv.port)
    try:
        wait_for(chrome, lambda: "reconnected" in text(chrome, "#mic-status"), timeout=30, what="the reconnect")
        assert by_css(chrome, "#banner").get_attribute("hidden") is not None  # the warning went away
        wait_for(
            chrome,
            lambda: [
                e
                for e in all_css(chrome, "#transcript .final")
                if int(e.get_attribute("data-connection")) > 1
                and wer(SPOKEN, e.find_element("css selector", ".text").text) <= 0.2
            ],
            timeout=60,
            what="words heard over the new connection",
        )
        stop_mic(chrome)
    finally:
        stop_server(restarted)


# ---------------------------------------------------------------- text to speech


def test_text_to_speech_plays_to_the_end_with_the_time_to_first_audio(chrome: Any, make_server: Any) -> None:
    srv = make_server()
    key = new_key(srv)
    open_console(chrome, srv, "tts", key)
    phrase = "The kitchen door is open."
    fill(chrome, "#tts-text", phrase)
    select(chrome, "#tts-route", "riva")  # priced, so the bill shows
    for fmt in ("wav_22050", "mp3_44100_128", "opus_48000_64"):
        select(chrome, "#tts-format", fmt)
        by_css(chrome, "#tts-speak").click()
        wait_for(chrome, lambda: state(chrome, "#tts-audio") == "ended", timeout=30, what=f"{fmt} audio to end")
        audio = chrome.execute_script(
            "const a = document.querySelector('#tts-audio');"
            "return {duration: a.duration, played: a.played.length ? a.played.end(0) : 0,"
            " first: a.dataset.firstAudioMs}"
        )
        assert 1.0 < audio["duration"] < 5 and audio["played"] == pytest.approx(audio["duration"], abs=0.1), audio
        line = text(chrome, "#tts-status")
        assert line.startswith(f"First audio after {audio['first']} ms") and int(audio["first"]) > 0, line
        assert f"{len(phrase)} characters" in line and "OMCU" in line
    screenshot(chrome, "tts")
    records, _ = asyncio.run(_usage(srv))
    assert [(r.kind, r.provider, r.characters) for r in records] == [("tts", "riva", len(phrase))] * 3
    assert severe_logs(chrome) == []


# ---------------------------------------------------------------- admin


def test_admin_view_lists_keys_with_limits_tops_up_creates_and_revokes(
    chrome: Any, make_server: Any, gateway_logs: LogLines
) -> None:
    srv = make_server({"admin.token": ADMIN})
    gateway_logs.attach()

    async def seed() -> tuple[Any, Any]:
        ledger = await srv.ledger()
        try:
            _, first = await ledger.create_key("acme", 10_000_000)
            _, limited = await ledger.create_key("acme robots", account_id=first.account_id, max_streams=2, rpm=60)
            return first, limited
        finally:
            await ledger.close()

    first, limited = asyncio.run(seed())
    open_console(chrome, srv, "admin")
    fill(chrome, "#admin-token", "not-the-token-at-all")
    by_css(chrome, "#admin-token-form button[type=submit]").click()
    wait_for(chrome, lambda: "admin token was refused" in text(chrome, "#banner-text"), what="the refusal")
    assert chrome.execute_script("return sessionStorage.getItem('speech.adminToken')") is None

    fill(chrome, "#admin-token", ADMIN)
    by_css(chrome, "#admin-token-form button[type=submit]").click()
    account = f".account[data-account-id='{first.account_id}']"
    wait_for(chrome, lambda: by_css(chrome, account).is_displayed(), what="the account list")
    assert chrome.execute_script(
        "return [sessionStorage.getItem('speech.adminToken'), localStorage.length, document.cookie]"
    ) == [ADMIN, 0, ""]
    assert "10 OMCU" in text(chrome, f"{account} .balance")
    row = by_css(chrome, f"tr[data-key-id='{limited.key_id}']")
    cells = [c.text for c in row.find_elements("css selector", "td")]
    assert cells[1:6] == ["acme robots", "active", "never", "2", "60"], cells

    fill(chrome, f"{account} .topup-amount", "25.5")
    by_css(chrome, f"{account} .topup button").click()
    wait_for(chrome, lambda: by_css(chrome, f"{account} .balance").get_attribute("data-uomcu") == "35500000")

    fill(chrome, "#admin-new-name", "new team")
    fill(chrome, "#admin-new-balance", "5")
    by_css(chrome, "#admin-create button[type=submit]").click()
    wait_for(chrome, lambda: text(chrome, "#admin-secret-value").startswith("sk_"), what="the new key")
    secret = text(chrome, "#admin-secret-value")

    revoke = by_css(chrome, f"tr[data-key-id='{limited.key_id}'] button.danger")
    revoke.click()  # asks for a second click
    assert revoke.text == "Really revoke?"
    revoke.click()
    row_state = f"tr[data-key-id='{limited.key_id}']"
    wait_for(chrome, lambda: by_css(chrome, row_state).get_attribute("data-state") == "revoked", what="the revocation")
    screenshot(chrome, "admin")

    async def check() -> None:
        ledger = await srv.ledger()
        try:
            assert await ledger.balance(first.account_id) == 35_500_000
            new = await ledger.authenticate(secret)
            assert new.name == "new team" and await ledger.balance(new.account_id) == 5_000_000
            revoked = await ledger.get_key(limited.key_id)
            assert revoked is not None and revoked.revoked is not None
        finally:
            await ledger.close()

    asyncio.run(check())
    # The new key can be used in this tab at once.
    by_css(chrome, "#admin-secret-use").click()
    wait_for(chrome, lambda: state(chrome, "#account-status") == "ready", what="the account view with the new key")
    assert text(chrome, "#balance-amount") == "5"
    assert "new team" in text(chrome, "#key-status")
    severe_logs(chrome)  # the refused token logged a 401: expected
    assert ADMIN not in gateway_logs.text and secret not in gateway_logs.text


# ---------------------------------------------------------------- errors


def test_clear_errors_for_a_wrong_key_and_an_exhausted_balance(chrome: Any, make_server: Any) -> None:
    srv = make_server()
    open_console(chrome, srv, "mic")
    by_css(chrome, "#mic-start").click()
    assert text(chrome, "#banner-text") == "Enter an API key above first."

    enter_key(chrome, "sk_0123456789ab_not-a-real-secret", expect="bad")
    assert "The API key was refused: invalid API key" in text(chrome, "#banner-text")
    by_css(chrome, "#mic-start").click()
    wait_for(chrome, lambda: state(chrome, "#mic-status") == "failed", what="the websocket's refusal")
    assert "The API key was refused: invalid API key" in text(chrome, "#banner-text")
    assert by_css(chrome, "#mic-start").is_enabled()

    # 0.05 OMCU at google's 50 OMCU a minute: 60 ms of speech.
    poor = new_key(srv, balance_uomcu=50_000)
    enter_key(chrome, poor)
    select(chrome, "#asr-route", "google")
    by_css(chrome, "#mic-start").click()
    wait_for(chrome, lambda: state(chrome, "#mic-status") == "failed", timeout=30, what="the stream to run dry")
    message = text(chrome, "#banner-text")
    assert message.startswith("Balance exhausted: insufficient balance"), message
    screenshot(chrome, "errors")
    # No reconnect loop: the stream stays stopped and can be started again after a top-up.
    chrome.execute_script("return new Promise(r => setTimeout(r, 2000))")
    assert state(chrome, "#mic-status") == "failed" and by_css(chrome, "#mic-start").is_enabled()

    chrome.find_element("link text", "Text to speech").click()
    select(chrome, "#tts-route", "riva")
    by_css(chrome, "#tts-speak").click()
    wait_for(chrome, lambda: state(chrome, "#tts-status") == "failed", what="the TTS refusal")
    assert text(chrome, "#tts-status").startswith("Balance exhausted: insufficient balance")
    severe_logs(chrome)  # the refused requests logged 401/402s: expected


def test_a_refused_microphone_permission_is_explained(browser_paths: Any, make_server: Any) -> None:
    srv = make_server()
    key = new_key(srv)
    driver = launch(browser_paths, mic="deny")
    try:
        open_console(driver, srv, "mic", key)
        by_css(driver, "#mic-start").click()
        wait_for(driver, lambda: state(driver, "#mic-status") == "failed", what="the refusal")
        assert text(driver, "#banner-text").startswith("Microphone permission was denied.")
        assert by_css(driver, "#mic-start").is_enabled()
    finally:
        driver.quit()

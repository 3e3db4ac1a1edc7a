from decimal import Decimal

import pytest

from speech.errors import ConfigError
from speech.metering.prices import MAX_UOMCU, PriceTable, format_omcu, llm_cost_from_unit, parse_omcu
from speech.settings import ASR_ROUTES, TTS_ROUTES, PriceSettings


@pytest.fixture
def prices() -> PriceTable:
    return PriceTable.from_settings(PriceSettings())


def test_from_default_settings(prices):
    assert dict(prices.asr) == {"google": 50_000_000, "riva": 25_000_000, "local": 0}
    assert dict(prices.tts) == {
        "elevenlabs": 30_000_000_000,
        "riva": 10_000_000_000,
        "local": 0,
    }
    assert prices.asr_unit_price("google") == 50_000_000
    assert prices.tts_unit_price("elevenlabs") == 30_000_000_000


def test_asr_cost_examples(prices):
    assert prices.asr_cost("google", 1) == 834  # 833.33 rounded up
    assert prices.asr_cost("google", 60_000) == 50_000_000
    assert prices.asr_cost("google", 0) == 0
    assert prices.asr_cost("google", 1_500) == 1_250_000
    assert prices.asr_cost("riva", 1) == 417  # 416.67 rounded up
    assert prices.asr_cost("riva", 60_000) == 25_000_000
    assert prices.asr_cost("local", 3_600_000) == 0


def test_tts_cost_examples(prices):
    assert prices.tts_cost("elevenlabs", 11) == 330_000
    assert prices.tts_cost("riva", 1) == 10_000
    assert prices.tts_cost("riva", 0) == 0
    assert prices.tts_cost("local", 5000) == 0
    assert prices.tts_cost("elevenlabs", 1_000_000) == 30_000_000_000


def test_fractional_prices_round_up():
    table = PriceTable.from_settings(
        PriceSettings(asr_per_minute={"x": Decimal("0.5")}, tts_per_million_chars={"y": Decimal("0.000001")})
    )
    assert table.asr_unit_price("x") == 500_000
    assert table.asr_cost("x", 1) == 9  # 8.33 -> 9
    assert table.asr_cost("x", 120) == 1_000
    assert table.tts_unit_price("y") == 1
    assert table.tts_cost("y", 1) == 1  # 1e-6 -> 1, never free when priced
    assert table.tts_cost("y", 1_000_000) == 1
    assert table.tts_cost("y", 1_000_001) == 2


def test_missing_route_raises_value_error(prices):
    with pytest.raises(ValueError, match="nope"):
        prices.asr_cost("nope", 10)
    with pytest.raises(ValueError, match="nope"):
        prices.tts_cost("nope", 10)
    with pytest.raises(ValueError):
        prices.asr_unit_price("elevenlabs")


def test_bad_quantities(prices):
    with pytest.raises(ValueError):
        prices.asr_cost("google", -1)
    with pytest.raises(TypeError):
        prices.asr_cost("google", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        prices.tts_cost("riva", True)  # type: ignore[arg-type]


def test_check_routes(prices):
    prices.check_routes(ASR_ROUTES, TTS_ROUTES)
    with pytest.raises(ConfigError, match="'azure'"):
        prices.check_routes(["google", "azure"], TTS_ROUTES)
    with pytest.raises(ConfigError, match="TTS route 'polly'"):
        prices.check_routes(ASR_ROUTES, ["polly"])


def test_from_settings_rejects_sub_micro_price():
    with pytest.raises(ConfigError, match=r"prices\.asr_per_minute\.google"):
        PriceTable.from_settings(PriceSettings(asr_per_minute={"google": Decimal("0.0000001")}))
    with pytest.raises(ConfigError, match=r"prices\.tts_per_million_chars\.riva"):
        PriceTable.from_settings(PriceSettings(tts_per_million_chars={"riva": Decimal(-1)}))


def test_price_table_is_read_only(prices):
    with pytest.raises(TypeError):
        prices.asr["google"] = 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0"),
        (1, "0.000001"),
        (10, "0.00001"),
        (1_500_000, "1.5"),
        (50_000_000, "50"),
        (123_456_789, "123.456789"),
        (-1_500_000, "-1.5"),
        (-1, "-0.000001"),
        (10**18, "1000000000000"),
    ],
)
def test_format_omcu(micro, text):
    assert format_omcu(micro) == text
    if micro >= 0:
        assert parse_omcu(text) == micro


def test_format_omcu_rejects_non_int():
    with pytest.raises(TypeError):
        format_omcu(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        ("1.5", 1_500_000),
        (" 2 ", 2_000_000),
        ("0.000001", 1),
        ("1.0000000", 1_000_000),  # trailing zeros are exact
        ("1e3", 1_000_000_000),
        ("0", 0),
        ("-0", 0),
        ("0e-999999", 0),
        (7, 7_000_000),
        (Decimal("0.25"), 250_000),
        ("1000000000000", MAX_UOMCU),
    ],
)
def test_parse_omcu(value, micro):
    assert parse_omcu(value) == micro


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "negative"),
        (-1, "negative"),
        (Decimal("-0.5"), "negative"),
        ("NaN", "finite"),
        ("sNaN", "finite"),
        ("inf", "finite"),
        ("0.0000001", "6 decimal places"),
        ("1.1234567", "6 decimal places"),
        ("abc", "not an OMCU amount"),
        ("", "not an OMCU amount"),
        ("1" * 100, "not an OMCU amount"),
        ("1e999999999", "too large"),
        ("1000000000000.000001", "too large"),
        (1.5, "not float"),
        (True, "not bool"),
        (None, "not NoneType"),
    ],
)
def test_parse_omcu_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_omcu(value)


# ---------------------------------------------------------------- LLM


def test_llm_prices_are_the_seed_table(prices):
    assert prices.llm_unit_prices("gpt-4o") == (42_500_000_000, 170_000_000_000)
    assert prices.llm_unit_prices("deepseek-chat") == (1_400_000_000, 2_800_000_000)
    assert prices.llm_unit_prices("gemini-2.5-flash") == (3_000_000_000, 25_000_000_000)
    assert set(prices.llm_input) == set(prices.llm_output)


def test_llm_price_is_the_longest_matching_prefix(prices):
    assert prices.llm_unit_prices("gpt-4o-mini-2024-07-18") == prices.llm_unit_prices("gpt-4o-mini")
    assert prices.llm_unit_prices("gpt-4o-2024-08-06") == (42_500_000_000, 170_000_000_000)
    assert prices.llm_unit_prices("gemini-2.5-flash-lite") == (1_000_000_000, 4_000_000_000)
    assert prices.llm_unit_prices("gpt-5.1-chat") == (25_000_000_000, 200_000_000_000)
    assert prices.llm_unit_prices("gpt-5.2") == (35_000_000_000, 280_000_000_000)
    # Unpriced: no key is a prefix (matching is case-sensitive and from the start).
    for model in ("gemini-3.5-flash", "GPT-4O", "my-gpt-4o", "gpt-4"):
        assert prices.llm_unit_prices(model) is None


def test_llm_cost_rounds_up_once_per_request():
    # 1 token in at 1 µOMCU/M + 1 token out at 1 µOMCU/M = 2e-6 µOMCU -> 1 µOMCU.
    assert llm_cost_from_unit(1, 1, 1, 1) == 1
    assert llm_cost_from_unit(0, 0, 10**6, 10**6) == 0
    # gpt-4o-mini: 1000 in (7 OMCU/M) + 500 out (28 OMCU/M) = 0.007 + 0.014 OMCU.
    assert llm_cost_from_unit(7_000_000_000, 28_000_000_000, 1000, 500) == 21_000_000
    # One rounding for the sum: 0.5 + 0.5 µOMCU is 1, not 2.
    assert llm_cost_from_unit(500_000, 500_000, 1, 1) == 1


def test_llm_prices_need_both_directions():
    with pytest.raises(ConfigError, match=r"'my-model' has an input price but no output price"):
        PriceTable.from_settings(
            PriceSettings(llm_input_per_million_tokens={"my-model": Decimal(1)}, llm_output_per_million_tokens={})
        )
    with pytest.raises(ConfigError, match=r"'m' has an output price but no input price"):
        PriceTable.from_settings(
            PriceSettings(llm_input_per_million_tokens={}, llm_output_per_million_tokens={"m": Decimal(1)})
        )
    with pytest.raises(ValueError, match="both an input and an output price"):
        PriceTable(llm_input={"a": 1}, llm_output={})
    with pytest.raises(ConfigError, match=r"prices\.llm_output_per_million_tokens\.gpt-4o"):
        PriceTable.from_settings(
            PriceSettings(
                llm_input_per_million_tokens={"gpt-4o": Decimal(1)},
                llm_output_per_million_tokens={"gpt-4o": Decimal("0.0000001")},
            )
        )

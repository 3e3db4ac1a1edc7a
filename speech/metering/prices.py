"""Prices and exact money arithmetic.

All money inside the gateway is an ``int`` of micro-OMCU (µOMCU,
1 OMCU = 1_000_000 µOMCU). Floats never touch a balance or a cost: they only
appear in JSON output, converted at the very edge.

Unit prices are held as integer µOMCU per minute (ASR), per million
characters (TTS) and per million input / output tokens (LLM). A configured OMCU price must therefore have at most six
decimal places (0.000001 OMCU = 1 µOMCU); finer prices are refused at
start-up. Costs are computed with integer arithmetic and rounded *up* to the
whole µOMCU, so a non-zero usage of a priced route never costs 0.

LLM prices are keyed by model prefix and a model is priced by the *longest*
prefix it starts with, so ``gpt-4o-mini-2024-07-18`` costs what
``gpt-4o-mini`` costs, not ``gpt-4o``. An LLM usage's cost is
``ceil((input price × input tokens + output price × output tokens) / 10^6)``:
one rounding for the whole request, not one per direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

from speech.errors import ConfigError
from speech.settings import PriceSettings

MICRO = 1_000_000
"""µOMCU per OMCU."""

MS_PER_MINUTE = 60_000
CHARS_PER_UNIT = 1_000_000
TOKENS_PER_UNIT = 1_000_000

MAX_UOMCU = 10**18
"""Largest amount accepted anywhere (10^12 OMCU); keeps sums far below 2^63."""

_MAX_TEXT = 64


def _ceil_div(num: int, den: int) -> int:
    return -(-num // den)


def _decimal_to_micro(value: Decimal, what: str) -> int:
    """Exact µOMCU of a non-negative OMCU Decimal with ≤ 6 decimal places."""
    if not value.is_finite():
        raise ValueError(f"{what} must be a finite number, got {value}")
    if value.is_zero():
        return 0
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    if value.adjusted() > 12:  # ≥ 10^13 OMCU: over MAX_UOMCU, skip the big powers
        raise ValueError(f"{what} is too large, got {value}")
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    coefficient = int("".join(map(str, digits)))
    shift = exponent + 6
    if shift >= 0:
        micro = coefficient * 10**shift
    else:
        micro, rest = divmod(coefficient, 10**-shift)
        if rest:
            raise ValueError(f"{what} has more than 6 decimal places (1 µOMCU = 0.000001 OMCU), got {value}")
    if micro > MAX_UOMCU:
        raise ValueError(f"{what} is too large, got {value}")
    return micro


def format_omcu(micro: int) -> str:
    """Exact decimal OMCU string of a µOMCU amount.

    ``1_500_000 -> "1.5"``, ``1 -> "0.000001"``, ``50_000_000 -> "50"``,
    ``-250_000 -> "-0.25"``. No exponent, no trailing zeros.
    """
    if isinstance(micro, bool) or not isinstance(micro, int):
        raise TypeError(f"µOMCU amounts are int, got {type(micro).__name__}")
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def parse_omcu(text: str | int | Decimal) -> int:
    """µOMCU of an OMCU amount given as a string, int or Decimal.

    ``"1.5" -> 1_500_000``, ``"0.000001" -> 1``, ``3 -> 3_000_000``.
    Raises :class:`ValueError` for negatives, NaN/infinity, more than six
    decimal places, amounts over 10^12 OMCU, text that is not a number, and
    floats (binary floats cannot hold most decimal amounts exactly: pass the
    text instead).
    """
    if isinstance(text, bool) or isinstance(text, float):
        raise ValueError(f"OMCU amount must be given as text or an integer, not {type(text).__name__}")
    if isinstance(text, int):
        value = Decimal(text)
    elif isinstance(text, Decimal):
        value = text
    elif isinstance(text, str):
        stripped = text.strip()
        if not stripped or len(stripped) > _MAX_TEXT:
            raise ValueError(f"not an OMCU amount: {text[:_MAX_TEXT]!r}")
        try:
            value = Decimal(stripped)
        except InvalidOperation:
            raise ValueError(f"not an OMCU amount: {text!r}") from None
    else:
        raise ValueError(f"OMCU amount must be given as text or an integer, not {type(text).__name__}")
    return _decimal_to_micro(value, "OMCU amount")


def _check_count(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")


@dataclass(frozen=True)
class PriceTable:
    """Unit prices by public route, in integer µOMCU.

    ``asr`` is µOMCU per minute of audio, ``tts`` µOMCU per million
    characters. A route missing from the table is *not* free: the cost
    functions raise :class:`ValueError`. The application calls
    :meth:`check_routes` at start-up so that never happens while serving;
    a free route is configured explicitly with price 0.
    """

    asr: Mapping[str, int] = field(default_factory=dict)
    tts: Mapping[str, int] = field(default_factory=dict)
    # µOMCU per million input / output tokens, by model prefix (same keys).
    llm_input: Mapping[str, int] = field(default_factory=dict)
    llm_output: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.llm_input) != set(self.llm_output):
            odd = sorted(set(self.llm_input) ^ set(self.llm_output))[0]
            raise ValueError(f"LLM model prefix {odd!r} needs both an input and an output price")
        for kind in ("asr", "tts", "llm_input", "llm_output"):
            table = dict(getattr(self, kind))
            for route, price in table.items():
                _check_count(price, f"{kind} price of route {route!r}")
                if price > MAX_UOMCU:
                    raise ValueError(f"{kind} price of route {route!r} is too large")
            object.__setattr__(self, kind, MappingProxyType(table))

    @classmethod
    def from_settings(cls, s: PriceSettings) -> PriceTable:
        """Convert the Decimal OMCU prices of the settings to µOMCU.

        Raises :class:`~speech.errors.ConfigError` naming the setting if a
        price is negative, not finite or has more than six decimal places.
        """
        tables: dict[str, dict[str, int]] = {"asr": {}, "tts": {}, "llm_input": {}, "llm_output": {}}
        for kind, section, prices in (
            ("asr", "asr_per_minute", s.asr_per_minute),
            ("tts", "tts_per_million_chars", s.tts_per_million_chars),
            ("llm_input", "llm_input_per_million_tokens", s.llm_input_per_million_tokens),
            ("llm_output", "llm_output_per_million_tokens", s.llm_output_per_million_tokens),
        ):
            for route, price in prices.items():
                where = f"prices.{section}.{route}"
                try:
                    tables[kind][route] = _decimal_to_micro(Decimal(price), "price")
                except (ValueError, ArithmeticError) as exc:
                    raise ConfigError(f"setting '{where}' is not a valid price: {exc}") from exc
        for this, other, section in (
            ("llm_input", "llm_output", "llm_output_per_million_tokens"),
            ("llm_output", "llm_input", "llm_input_per_million_tokens"),
        ):
            missing = sorted(set(tables[this]) - set(tables[other]))
            if missing:
                raise ConfigError(
                    f"LLM model prefix {missing[0]!r} has an {this.split('_')[1]} price but no "
                    f'{other.split("_")[1]} price: set prices.{section}."{missing[0]}"'
                )
        return cls(**tables)

    def check_routes(self, asr_routes: Iterable[str], tts_routes: Iterable[str]) -> None:
        """Raise :class:`~speech.errors.ConfigError` if a served route has no price."""
        for kind, routes, table, section in (
            ("ASR", asr_routes, self.asr, "asr_per_minute"),
            ("TTS", tts_routes, self.tts, "tts_per_million_chars"),
        ):
            missing = sorted(set(routes) - set(table))
            if missing:
                raise ConfigError(
                    f"{kind} route {missing[0]!r} has no price: set prices.{section}.{missing[0]} (0 for a free route)"
                )

    def asr_unit_price(self, route: str) -> int:
        """µOMCU per minute of audio on ``route``."""
        try:
            return self.asr[route]
        except KeyError:
            raise ValueError(f"no ASR price for route {route!r}") from None

    def tts_unit_price(self, route: str) -> int:
        """µOMCU per million characters on ``route``."""
        try:
            return self.tts[route]
        except KeyError:
            raise ValueError(f"no TTS price for route {route!r}") from None

    def llm_unit_prices(self, model: str) -> tuple[int, int] | None:
        """(input, output) µOMCU per million tokens of the longest price key
        ``model`` starts with; ``None`` when no key matches (unpriced)."""
        best = max((k for k in self.llm_input if model.startswith(k)), key=len, default=None)
        if best is None:
            return None
        return self.llm_input[best], self.llm_output[best]

    def asr_cost(self, route: str, milliseconds: int) -> int:
        """µOMCU for ``milliseconds`` of audio, rounded up to the whole µOMCU.

        Billing granularity is the millisecond: price/min × ms / 60000.
        """
        _check_count(milliseconds, "milliseconds")
        return asr_cost_from_unit(self.asr_unit_price(route), milliseconds)

    def tts_cost(self, route: str, characters: int) -> int:
        """µOMCU for ``characters`` characters, rounded up to the whole µOMCU."""
        _check_count(characters, "characters")
        return tts_cost_from_unit(self.tts_unit_price(route), characters)


def asr_cost_from_unit(unit_price_uomcu: int, milliseconds: int) -> int:
    """ceil(µOMCU per minute × ms / 60000), integers only."""
    return _ceil_div(unit_price_uomcu * milliseconds, MS_PER_MINUTE)


def tts_cost_from_unit(unit_price_uomcu: int, characters: int) -> int:
    """ceil(µOMCU per million chars × chars / 10^6), integers only."""
    return _ceil_div(unit_price_uomcu * characters, CHARS_PER_UNIT)


def llm_cost_from_unit(input_unit_uomcu: int, output_unit_uomcu: int, input_tokens: int, output_tokens: int) -> int:
    """ceil((input price × input tokens + output price × output tokens) / 10^6), integers only."""
    return _ceil_div(input_unit_uomcu * input_tokens + output_unit_uomcu * output_tokens, TOKENS_PER_UNIT)

"""Money: the ISO 4217 table, the one rounding rule, plain rendering."""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.common.money import (
    CURRENCY_EXPONENTS,
    MONEY_CONTEXT,
    currency_exponent,
    is_currency,
    minor_unit,
    round_money,
    to_plain_string,
)


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("CHF", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("VND", 0),
        ("CLP", 0),
        ("XOF", 0),
        ("UYI", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("OMR", 3),
        ("JOD", 3),
        ("TND", 3),
        ("LYD", 3),
        ("IQD", 3),
        ("CLF", 4),
        ("UYW", 4),
    ],
)
def test_exponents_follow_iso_4217(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent
    assert is_currency(code)


def test_table_is_complete_and_well_formed() -> None:
    assert len(CURRENCY_EXPONENTS) >= 150
    for code, exponent in CURRENCY_EXPONENTS.items():
        assert len(code) == 3
        assert code.isalpha()
        assert code.isupper()
        assert exponent in (0, 2, 3, 4)


@pytest.mark.parametrize("code", ["XAU", "XAG", "XPT", "XPD", "XDR", "XXX", "XTS", "HRK", "VEF"])
def test_codes_without_minor_units_or_withdrawn_are_not_currencies(code: str) -> None:
    assert not is_currency(code)


@pytest.mark.parametrize("code", ["usd", "US", "USDX", "", "ABC"])
def test_unknown_code_is_a_clear_value_error(code: str) -> None:
    assert not is_currency(code)
    with pytest.raises(ValueError, match="unknown currency") as raised:
        currency_exponent(code)
    assert repr(code) in str(raised.value)
    assert not isinstance(raised.value, KeyError)


def test_minor_unit() -> None:
    assert str(minor_unit("USD")) == "0.01"
    assert str(minor_unit("JPY")) == "1"
    assert str(minor_unit("KWD")) == "0.001"


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("12.5", "USD", "12.50"),
        ("12", "USD", "12.00"),
        ("3.0864175", "USD", "3.09"),
        ("0.005", "USD", "0.01"),
        ("0.00499999999", "USD", "0.00"),
        ("2.675", "USD", "2.68"),  # half-up, exact: no binary float surprise
        ("-0.005", "USD", "-0.01"),  # a tie goes away from zero
        ("-0.001", "USD", "0.00"),  # never a negative zero
        ("0.5", "JPY", "1"),
        ("1.5", "JPY", "2"),
        ("2.5", "JPY", "3"),  # half-up, not banker's rounding
        ("1234.4999", "JPY", "1234"),
        ("1E+3", "JPY", "1000"),
        ("1.2345", "KWD", "1.235"),
        ("1.2344", "KWD", "1.234"),
        ("0.0005", "KWD", "0.001"),
        ("7", "KWD", "7.000"),
        ("0.00005", "CLF", "0.0001"),
        ("0", "USD", "0.00"),
    ],
)
def test_round_money_examples(amount: str, currency: str, expected: str) -> None:
    assert str(round_money(Decimal(amount), currency)) == expected


def test_round_money_does_not_depend_on_the_thread_context() -> None:
    # 31 significant digits: more than the default context's 28, so this only works with an
    # explicit, wider context.
    amount = Decimal("123456789012345678901234567890.125")
    with localcontext() as ctx:
        ctx.prec = 5
        ctx.rounding = ROUND_DOWN
        assert str(round_money(amount, "USD")) == "123456789012345678901234567890.13"
        assert str(round_money(Decimal("0.125"), "USD")) == "0.13"


def test_round_money_refuses_non_finite_and_unknown_currency() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        round_money(Decimal("NaN"), "USD")
    with pytest.raises(ValueError, match="non-finite"):
        round_money(Decimal("Infinity"), "USD")
    with pytest.raises(ValueError, match="unknown currency"):
        round_money(Decimal("1"), "usd")


def test_money_context_is_explicit_and_wide() -> None:
    assert MONEY_CONTEXT.prec >= 60
    assert MONEY_CONTEXT.rounding == ROUND_HALF_UP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1E+6", "1000000"),
        ("1000000", "1000000"),
        ("0.000001", "0.000001"),
        ("1E-6", "0.000001"),
        ("1.20E-7", "0.000000120"),
        ("12.50", "12.50"),
        ("-3.5E+2", "-350"),
        ("0", "0"),
        ("0.00", "0.00"),
    ],
)
def test_to_plain_string(value: str, expected: str) -> None:
    assert to_plain_string(Decimal(value)) == expected


def test_to_plain_string_refuses_nan() -> None:
    with pytest.raises(ValueError):
        to_plain_string(Decimal("NaN"))


def _reference_half_up(value: Fraction, exponent: int) -> Fraction:
    scale = 10**exponent
    magnitude = math.floor(abs(value) * scale + Fraction(1, 2))
    return Fraction(magnitude if value >= 0 else -magnitude, scale)


amounts = st.integers(min_value=0, max_value=20).flatmap(
    lambda places: st.decimals(
        min_value=Decimal("-1e12"),
        max_value=Decimal("1e12"),
        places=places,
        allow_nan=False,
        allow_infinity=False,
    )
)


@settings(max_examples=200, deadline=None)
@given(amount=amounts, currency=st.sampled_from(["JPY", "USD", "KWD", "CLF"]))
def test_round_money_is_half_up_to_minor_units(amount: Decimal, currency: str) -> None:
    exponent = currency_exponent(currency)
    rounded = round_money(amount, currency)
    exact = Fraction(amount)
    assert rounded.as_tuple().exponent == -exponent
    assert abs(Fraction(rounded) - exact) <= Fraction(1, 2 * 10**exponent)
    assert Fraction(rounded) == _reference_half_up(exact, exponent)
    assert round_money(rounded, currency) == rounded
    assert not (rounded.is_zero() and rounded.is_signed())


def test_the_largest_amounts_inputs_allow_round_exactly() -> None:
    """The widest line the API can produce: a month's sum of 2**63 events just under 10**28
    with 18 decimal places, times a unit amount just under 10**20 with 12 decimal places, per
    10**-12 units; and the sum of a million such lines."""
    with localcontext(MONEY_CONTEXT):
        quantity = (Decimal(10**28) - Decimal("1e-18")) * 2**63
        unit_amount = Decimal(10**20) - Decimal("1e-12")
        amount = quantity * unit_amount / Decimal("1e-12")
        total = round_money(amount, "KWD") * 10**6
    exact = Fraction(quantity) * Fraction(unit_amount) * 10**12
    assert Fraction(round_money(amount, "KWD")) == Fraction(round(exact * 1000), 1000)
    assert round_money(total, "KWD") == total
    # A unit price that does not divide evenly still rounds once, half-up, correctly.
    with localcontext(MONEY_CONTEXT):
        third = quantity * unit_amount / Decimal("3")
    expected = Fraction(quantity) * Fraction(unit_amount) / 3
    assert Fraction(round_money(third, "USD")) == Fraction(
        math.floor(expected * 100 + Fraction(1, 2)), 100
    )

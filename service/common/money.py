"""Money arithmetic: ISO 4217 minor units and the one rounding rule invoices use.

Amounts are `Decimal` end to end. Arithmetic runs in `MONEY_CONTEXT` (200 significant digits),
wide enough for the largest amounts the API's input bounds allow (below); each amount is
rounded once, half-up, to the currency's minor units.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, DivisionByZero, InvalidOperation, Overflow

# Active ISO 4217 codes (list one) and their minor-unit exponent, funds codes included.
# Codes whose minor unit is "N.A." (precious metals XAU/XAG/XPT/XPD, XDR, XSU, XUA, the test
# code XTS and XXX) have no money amount to round to and are left out on purpose.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2,
    "AFN": 2,
    "ALL": 2,
    "AMD": 2,
    "ANG": 2,
    "AOA": 2,
    "ARS": 2,
    "AUD": 2,
    "AWG": 2,
    "AZN": 2,
    "BAM": 2,
    "BBD": 2,
    "BDT": 2,
    "BGN": 2,
    "BHD": 3,
    "BIF": 0,
    "BMD": 2,
    "BND": 2,
    "BOB": 2,
    "BOV": 2,
    "BRL": 2,
    "BSD": 2,
    "BTN": 2,
    "BWP": 2,
    "BYN": 2,
    "BZD": 2,
    "CAD": 2,
    "CDF": 2,
    "CHE": 2,
    "CHF": 2,
    "CHW": 2,
    "CLF": 4,
    "CLP": 0,
    "CNY": 2,
    "COP": 2,
    "COU": 2,
    "CRC": 2,
    "CUP": 2,
    "CVE": 2,
    "CZK": 2,
    "DJF": 0,
    "DKK": 2,
    "DOP": 2,
    "DZD": 2,
    "EGP": 2,
    "ERN": 2,
    "ETB": 2,
    "EUR": 2,
    "FJD": 2,
    "FKP": 2,
    "GBP": 2,
    "GEL": 2,
    "GHS": 2,
    "GIP": 2,
    "GMD": 2,
    "GNF": 0,
    "GTQ": 2,
    "GYD": 2,
    "HKD": 2,
    "HNL": 2,
    "HTG": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "IQD": 3,
    "IRR": 2,
    "ISK": 0,
    "JMD": 2,
    "JOD": 3,
    "JPY": 0,
    "KES": 2,
    "KGS": 2,
    "KHR": 2,
    "KMF": 0,
    "KPW": 2,
    "KRW": 0,
    "KWD": 3,
    "KYD": 2,
    "KZT": 2,
    "LAK": 2,
    "LBP": 2,
    "LKR": 2,
    "LRD": 2,
    "LSL": 2,
    "LYD": 3,
    "MAD": 2,
    "MDL": 2,
    "MGA": 2,
    "MKD": 2,
    "MMK": 2,
    "MNT": 2,
    "MOP": 2,
    "MRU": 2,
    "MUR": 2,
    "MVR": 2,
    "MWK": 2,
    "MXN": 2,
    "MXV": 2,
    "MYR": 2,
    "MZN": 2,
    "NAD": 2,
    "NGN": 2,
    "NIO": 2,
    "NOK": 2,
    "NPR": 2,
    "NZD": 2,
    "OMR": 3,
    "PAB": 2,
    "PEN": 2,
    "PGK": 2,
    "PHP": 2,
    "PKR": 2,
    "PLN": 2,
    "PYG": 0,
    "QAR": 2,
    "RON": 2,
    "RSD": 2,
    "RUB": 2,
    "RWF": 0,
    "SAR": 2,
    "SBD": 2,
    "SCR": 2,
    "SDG": 2,
    "SEK": 2,
    "SGD": 2,
    "SHP": 2,
    "SLE": 2,
    "SOS": 2,
    "SRD": 2,
    "SSP": 2,
    "STN": 2,
    "SVC": 2,
    "SYP": 2,
    "SZL": 2,
    "THB": 2,
    "TJS": 2,
    "TMT": 2,
    "TND": 3,
    "TOP": 2,
    "TRY": 2,
    "TTD": 2,
    "TWD": 2,
    "TZS": 2,
    "UAH": 2,
    "UGX": 0,
    "USD": 2,
    "USN": 2,
    "UYI": 0,
    "UYU": 2,
    "UYW": 4,
    "UZS": 2,
    "VED": 2,
    "VES": 2,
    "VND": 0,
    "VUV": 0,
    "WST": 2,
    "XAF": 0,
    "XCD": 2,
    "XCG": 2,
    "XOF": 0,
    "XPF": 0,
    "YER": 2,
    "ZAR": 2,
    "ZMW": 2,
    "ZWG": 2,
}

# The explicit context for money arithmetic, half-up like the rounding rule. Its precision
# covers every amount the inputs allow: a month's quantity is below 10**47 (2**63 events,
# each below 10**28) with at most 18 decimals, a unit amount below 10**20 with at most 12, so
# their product has at most 97 digits and is exact; per_units >= 10**-12 leaves a quotient
# below 10**79, and 200 digits keep over 100 digits after the point, far more than rounding
# to minor units needs, and room for totals of many such lines. (60 digits made 20-digit
# prices per 10**-12 units on 10**28-token months an InvalidOperation, blocking the tenant.)
# Decimal works on the digits an operand has, so everyday amounts cost the same as before.
# Invalid operations, division by zero and overflow raise instead of producing NaN or Infinity.
MONEY_CONTEXT = Context(
    prec=200,
    rounding=ROUND_HALF_UP,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


def is_currency(code: str) -> bool:
    """True for an active ISO 4217 code with minor units, spelled in upper case (`"USD"`)."""
    return code in CURRENCY_EXPONENTS


def currency_exponent(code: str) -> int:
    """The number of minor-unit digits of `code` (USD 2, JPY 0, KWD 3)."""
    try:
        return CURRENCY_EXPONENTS[code]
    except KeyError:
        raise ValueError(
            f"unknown currency {code!r}: expected an active ISO 4217 code in upper case,"
            " such as 'USD', 'EUR' or 'JPY'"
        ) from None


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of `currency`: `Decimal("0.01")` for USD, `Decimal("1")` for JPY."""
    return Decimal(1).scaleb(-currency_exponent(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round `amount` once, half-up (away from zero on a tie), to the minor units of `currency`.

    The result always carries exactly the currency's number of decimal places
    (`Decimal("12.5")` in USD is `Decimal("12.50")`), and a zero is never negative.
    """
    if not amount.is_finite():
        raise ValueError(f"cannot round a non-finite amount ({amount}) to money")
    rounded = amount.quantize(minor_unit(currency), rounding=ROUND_HALF_UP, context=MONEY_CONTEXT)
    # -0.001 rounds to -0.00; an invoice should say 0.00.
    return rounded.copy_abs() if rounded.is_zero() else rounded


def to_plain_string(value: Decimal) -> str:
    """Render `value` in positional notation, never with an exponent.

    `Decimal("1E+6")` gives `"1000000"` and `Decimal("1E-6")` gives `"0.000001"`; trailing zeros
    that the value carries are kept (`Decimal("12.50")` gives `"12.50"`).
    """
    if not value.is_finite():
        raise ValueError(f"cannot render a non-finite decimal ({value})")
    return format(value, "f")


def decimal_places(value: Decimal) -> int:
    """Digits after the point that finite `value` needs (trailing zeros do not count)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int), "finite decimals only"
    if not any(digits):
        return 0
    places, index = -exponent, len(digits) - 1
    while places > 0 and digits[index] == 0:
        places, index = places - 1, index - 1
    return max(places, 0)


def _quantized(value: Decimal, places: int) -> str:
    return to_plain_string(value.quantize(Decimal(1).scaleb(-places), context=MONEY_CONTEXT))


def render_amount(value: Decimal, currency: str) -> str:
    """A money amount with at least the currency's minor units: "2.50", "0.000002", "100"."""
    return _quantized(value, max(decimal_places(value), currency_exponent(currency)))


def render_quantity(value: Decimal) -> str:
    """A quantity without trailing zeros or exponent: "1000000", "0.5"."""
    if value == value.to_integral_value():  # most quantities are counts of tokens or calls
        return str(int(value))
    return _quantized(value, decimal_places(value))

"""Shared schema pieces: field constraints, pagination envelope, opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.params import Parameter

from service.common.errors import FieldError, InvalidInput
from service.common.text import unstorable_reason

T = TypeVar("T")

Slug = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        max_length=64,
        description="lowercase letters, digits, '-' and '_'; at most 64 characters",
    ),
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
CurrencyCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
Limit = Annotated[int, Parameter(ge=1, le=1000, description="page size, 1 to 1000 (default 100)")]
DEFAULT_LIMIT = 100


class Page(msgspec.Struct, Generic[T]):
    """One page of a keyset-paginated list; pass next_cursor back as ?cursor= for the next."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The values of a cursor made by encode_cursor, or a 422 naming `cursor`. Only what
    encode_cursor writes is accepted (a flat list of strings and 64-bit integers), so that a
    forged cursor never reaches a query: nesting, NUL characters, huge numbers."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(values, list) or len(values) != arity:
        raise _bad_cursor()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _bad_cursor()
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise _bad_cursor()
        if isinstance(value, str) and unstorable_reason(value) is not None:
            raise _bad_cursor()
    return values


def _bad_cursor() -> InvalidInput:
    message = "cursor is not one this API returned"
    return InvalidInput(message, errors=[FieldError(field="cursor", message=message)])

"""Shared schema pieces: field constraints, pagination envelope, opaque cursors."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from litestar.params import Parameter

from service.common.errors import InvalidInput

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
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this API returned") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidInput("cursor is not one this API returned")
    return values

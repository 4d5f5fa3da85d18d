"""JSON request bodies, decoded once for every route, refused with a 422 that names the field.

Litestar decodes a body in two steps: JSON to Python values, then a lax conversion to the
handler's `data` type. Left alone, three kinds of input escaped as 500s or were let through:

- invalid UTF-8 raises UnicodeDecodeError and JSON nested a thousand levels deep raises
  RecursionError, neither of which Litestar turns into a client error;
- the lax conversion turns a bare number into a date (seconds since 1970), where the API
  takes RFC 3339 strings with an offset only;
- NUL characters pass decoding and are refused only by PostgreSQL, in its own words.

`ServiceRequest.json` therefore decodes the body itself: JSON errors become 422s, every
string is checked for what the database cannot store, and a body with a msgspec struct type is
also decoded strictly into that type, so that a value of the wrong JSON type (a number for a
time) is refused naming the field before Litestar's lax conversion sees it."""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from litestar import Request

from service.common.errors import FieldError, InvalidInput
from service.common.text import require_storable_text

_ANY_JSON = msgspec.json.Decoder()
# A decoded string can hold NUL or a lone surrogate only if the JSON spelled it as a \u escape
# (raw NUL bytes are invalid JSON and raw surrogates invalid UTF-8, both refused by the
# decoder), so bodies without such an escape skip the walk over every string (about 5 us of the
# ~7 us a typical event body cost). A surrogate pair (an escaped emoji) still takes the walk.
_MAY_HOLD_UNSTORABLE_TEXT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


class ServiceRequest(Request[Any, Any, Any]):
    """The app's request class (see create_app): Litestar calls `json()` to get a body."""

    async def json(self) -> Any:
        data = self.route_handler.parsed_fn_signature.parameters.get("data")
        strict = None if data is None else strict_decoder(data.annotation)
        return decode_json_body(await self.body(), strict)


def decode_json_body(body: bytes, strict: msgspec.json.Decoder[Any] | None = None) -> Any:
    """Decode a request body to Python values (as Litestar expects them), or raise a 422."""
    if strict is not None and body:
        _decode(strict, body)  # first: its errors name the field
    try:
        value = _decode(_ANY_JSON, body or b"null")
    except InvalidInput as exc:
        if exc.errors and exc.errors[0].field != "body":
            # Typed as "any JSON", the one value msgspec refuses is a number beyond a float
            # (1e400); the strict decode above took it as a decimal, the domain checks its range.
            raise body_error("the body holds a number out of range (beyond ±1.7e308)") from exc
        raise
    if may_hold_unstorable_text(body):
        require_storable_text(value)
    return value


def may_hold_unstorable_text(body: bytes) -> bool:
    """False when no decoded string of this JSON body can hold NUL or a lone surrogate, so the
    walk over its strings can be skipped."""
    return _MAY_HOLD_UNSTORABLE_TEXT.search(body) is not None


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except UnicodeDecodeError as exc:
        raise body_error("the body is not valid UTF-8") from exc
    except RecursionError as exc:
        raise body_error("the body is nested too deeply") from exc
    except msgspec.ValidationError as exc:
        field, message = field_of(exc)
        field = entry_field(decoder, body, field)
        raise InvalidInput(
            f"{field}: {message}", errors=[FieldError(field=field, message=message)]
        ) from exc
    except msgspec.DecodeError as exc:
        raise body_error(f"the body is not valid JSON ({_without_path(str(exc))})") from exc


def body_error(message: str) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(field="body", message=message)])


def field_of(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says 'Expected `str`, got `int` - at `$.match.model`': ('match.model', 'Expected
    `str`, got `int`'). Without a path the error is about the body as a whole."""
    text = str(exc)
    found = _PATH.search(text)
    if found is None:
        return "body", text
    return found.group(1) or "body", text[: found.start()]


def entry_field(decoder: msgspec.json.Decoder[Any], body: bytes, field: str) -> str:
    """msgspec names a bad mapping value 'dimensions[...]', not its key. For a top-level
    mapping field, find the key: the first entry that, alone in that mapping, still fails at
    the same place (only run on the error path). Returns 'dimensions.<key>', or `field`."""
    name = field.removesuffix("[...]")
    if name == field or not name.isidentifier():
        return field
    try:
        whole = _ANY_JSON.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return field
    mapping = whole.get(name) if isinstance(whole, dict) else None
    if not isinstance(mapping, dict):
        return field
    for key, value in mapping.items():
        try:
            decoder.decode(msgspec.json.encode({**whole, name: {key: value}}))
        except msgspec.ValidationError as exc:
            if field_of(exc)[0] == field:
                return f"{name}.{key}"
        except (msgspec.DecodeError, RecursionError):
            return field
    return field


def _without_path(text: str) -> str:
    found = _PATH.search(text)
    return text if found is None else text[: found.start()]


@functools.cache
def strict_decoder(annotation: Any) -> msgspec.json.Decoder[Any] | None:
    """A strict decoder for a struct body type (None for other types: raw bodies, lists)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return msgspec.json.Decoder(annotation, strict=True)
    return None

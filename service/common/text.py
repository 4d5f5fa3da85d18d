"""Text the database can store: PostgreSQL refuses NUL characters in `text` and `jsonb`, and
UTF-8 has no encoding for a lone surrogate (U+D800 to U+DFFF). Either would reach the database
only to be refused there in the driver's words; request values are checked here first, so that
the refusal names the field and says what to change."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from service.common.errors import FieldError, InvalidInput

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_reason(text: str) -> str | None:
    """Why `text` cannot be stored, or None when it can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters (\\u0000)"
    return "must not contain lone surrogates (\\ud800 to \\udfff), which are not valid Unicode"


def find_unstorable_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first string (key or value) in a decoded JSON value that cannot be stored, as
    (field path, reason); None when every string can be stored. Iterative, so that nesting
    depth costs memory, not stack."""
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if (reason := unstorable_reason(item)) is not None:
                return (where or "body", reason)
        elif isinstance(item, Mapping):
            for key, child in reversed(list(item.items())):
                key_text = str(key)
                if (reason := unstorable_reason(key_text)) is not None:
                    return (where or "body", f"keys {reason}")
                pending.append((child, f"{where}.{key_text}" if where else key_text))
        elif isinstance(item, (list, tuple)):
            pending.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def require_storable_text(value: Any, path: str = "") -> None:
    """Raise a 422 naming the first string in `value` that cannot be stored."""
    found = find_unstorable_text(value, path)
    if found is not None:
        field, reason = found
        raise InvalidInput(f"{field} {reason}", errors=[FieldError(field=field, message=reason)])

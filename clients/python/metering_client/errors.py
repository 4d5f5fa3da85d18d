"""The client's exceptions."""

from __future__ import annotations

from typing import Any

import msgspec


class FieldError(msgspec.Struct, kw_only=True):
    """One entry of a problem's `errors`: the field (and, in a batch, the event's index)."""

    field: str
    message: str
    index: int | None = None


class MeteringError(Exception):
    """Any error answer of the service (RFC 9457 problem+json), or no answer at all.

    `code` is the service's stable code (`validation_error`, `not_found`, `conflict`, …);
    `errors` names the fields at fault. An answer that is not problem+json (a proxy's error
    page) gets `code` `http_<status>`; a request that got no answer gets `unreachable` and
    `status` None."""

    def __init__(
        self,
        status: int | None,
        code: str,
        title: str,
        detail: str = "",
        errors: list[FieldError] | None = None,
        type: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        super().__init__(f"{status or 'no answer'} {code}: {detail or title}")

    @classmethod
    def from_response(cls, status: int, content: bytes) -> MeteringError:
        try:
            problem: Any = msgspec.json.decode(content, type=_Problem)
        except (msgspec.ValidationError, msgspec.DecodeError):
            text = content[:200].decode("utf-8", "replace")
            return cls(status, f"http_{status}", f"HTTP {status}", text)
        return cls(
            problem.status or status,
            problem.code or f"http_{status}",
            problem.title,
            problem.detail,
            problem.errors,
            problem.type,
        )


class _Problem(msgspec.Struct):
    title: str = ""
    detail: str = ""
    code: str = ""
    status: int = 0
    type: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)


class BufferFull(Exception):
    """`record` waited `block_timeout` seconds (on_full="block") and the buffer stayed full:
    the service has been unreachable for long. The event was not buffered."""


class TrackerClosed(RuntimeError):
    """`record` after `close()`."""

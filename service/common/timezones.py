"""IANA time zone names, checked before zoneinfo ever sees them.

zoneinfo takes any name that resolves to a file under its search path: `localtime` (the
server's own zone), `Factory`, `posixrules` and the `posix/` and `right/` copies (the latter
count leap seconds) load as well as `Europe/Berlin`, and a 256-character name makes the file
system raise OSError (file name too long). Only names of the IANA database are accepted,
taken once from the installed database; `UTC` is one of them."""

from __future__ import annotations

import zoneinfo
from zoneinfo import ZoneInfo

from service.common.errors import FieldError, InvalidInput

_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules"})
IANA_ZONES: frozenset[str] = frozenset(
    name
    for name in zoneinfo.available_timezones()
    if name not in _NOT_ZONES and not name.startswith(("posix/", "right/"))
)


def is_iana_zone(name: str) -> bool:
    return name in IANA_ZONES


def zone_named(name: str, field: str = "timezone") -> ZoneInfo:
    """The zone called `name`, or a 422 naming `field`."""
    if not is_iana_zone(name):
        raise InvalidInput(
            f"{field}: {_shown(name)} is not an IANA time zone (e.g. 'Europe/Berlin' or 'UTC')",
            errors=[FieldError(field=field, message="unknown IANA time zone")],
        )
    return ZoneInfo(name)


def _shown(name: str) -> str:
    return repr(name if len(name) <= 64 else name[:64] + "…")

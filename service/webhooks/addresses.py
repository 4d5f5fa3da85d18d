"""Which receivers the service may post to. An admin registers any URL; without a check the
service would post, with its own network position, to loopback, the private network or the
cloud metadata address (169.254.169.254). Every address the host resolves to is checked, when
the endpoint is registered and again before each attempt (DNS may change in between)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class AddressRefused(ValueError):
    """The URL cannot be used as a receiver; the message says why."""


def check_url_shape(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL without credentials, or AddressRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise AddressRefused("has no host")
    if parts.username or parts.password:
        raise AddressRefused("must not carry a user name or password")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_receiver(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is malformed, or (unless allow_private) whose host resolves to any
    private, loopback, link-local or otherwise non-public address."""
    host, port = check_url_shape(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressRefused(f"host {host!r} does not resolve ({exc})") from exc
    refused = sorted({str(info[4][0]) for info in infos if not _is_public(str(info[4][0]))})
    if refused:
        raise AddressRefused(
            f"host {host!r} resolves to a private, loopback or link-local address "
            f"({', '.join(refused)}); set METERING_WEBHOOK_ALLOW_PRIVATE=true to allow such "
            "receivers (development only)"
        )

"""Correct `Allow` on the automatic OPTIONS answers.

Litestar 2 builds the automatic OPTIONS handler of a path when the first handler of that path
is registered, and it keeps listing only that handler's method when more handlers join the
path (litestar-org/litestar#4169, fixed in Litestar 3): OPTIONS /v1/tenants said
`Allow: OPTIONS, POST` although GET is served too. This wrapper rewrites the header of those
204 answers from the complete routing table. Remove it when moving to Litestar 3."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from litestar.routes import HTTPRoute

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send


class OptionsAllowHeader:
    def __init__(self, app: ASGIApp, allow: dict[str, bytes]) -> None:
        self.app = app
        self.allow = allow  # path template → the methods the path serves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            allow = self.allow.get(scope.get("path_template") or "")
            if message["type"] == "http.response.start" and message["status"] == 204 and allow:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow)]}
            await send(message)

        await self.app(scope, receive, send_with_allow)


def fix_options_allow_header(app: Litestar) -> None:
    allow = {
        route.path_format: ", ".join(sorted(route.methods)).encode()
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }
    app.asgi_handler = OptionsAllowHeader(app.asgi_handler, allow)

"""An HTTP client calling the app on the test's own event loop.

Litestar's AsyncTestClient runs the app on a separate thread's loop and blocks the caller
while a request runs, so requests from several tasks never overlap, and connections the test
opens on its own loop cannot be shared with the app. Tests about concurrency and the pool use
this client instead: httpx's ASGI transport, with the app's lifespan entered by hand."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from litestar import Litestar


@contextlib.asynccontextmanager
async def in_loop_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client

"""The docs UI works offline: /docs names no external URL, and the service serves every file
the page loads."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class LinkCollector(HTMLParser):
    """Every src and href attribute of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def links_of(html: str) -> list[str]:
    collector = LinkCollector()
    collector.feed(html)
    return collector.links


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
async def test_docs_page_names_no_external_url(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = links_of(page.text)
    external = [link for link in links if urlsplit(link).scheme or link.startswith("//")]
    assert external == [], f"/docs loads files from elsewhere: {external}"
    loaded = {link.rsplit(".", 1)[-1] for link in links}
    assert {"js", "css"} <= loaded, links


async def test_every_file_the_docs_page_loads_is_served(client: AsyncTestClient[Litestar]) -> None:
    links = links_of((await client.get("/docs")).text)
    assert links
    for link in links:
        answer = await client.get(link)
        assert answer.status_code == 200, link
        suffix = "." + link.rsplit(".", 1)[-1]
        assert EXPECTED_TYPES[suffix] in answer.headers["content-type"], (link, answer.headers)
        assert len(answer.content) > 0, link


async def test_the_script_is_swagger_ui(client: AsyncTestClient[Litestar]) -> None:
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert b"SwaggerUIBundle" in bundle.content


async def test_a_missing_asset_is_a_404(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/docs/assets/nothing-here.js")).status_code == 404

"""Render the OpenAPI document from the code, without a database."""

from __future__ import annotations

import json

from service.settings import Settings

# The engine is created lazily and never connects while the schema is rendered.
_OFFLINE_URL = "postgresql://openapi@localhost:1/openapi"


def render_openapi() -> str:
    from service.app import create_app

    app = create_app(Settings(database_url=_OFFLINE_URL, workers=1))
    schema = app.openapi_schema.to_schema()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

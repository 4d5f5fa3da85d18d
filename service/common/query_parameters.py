"""Query parameters a route does not declare are refused (422 naming them), never ignored:
`/v1/usage?groupby=model` (for `group_by`) would otherwise answer ungrouped totals that look
like a correct answer. One check for every route, in a `before_request` hook: it runs after
the guards (a request without a key still gets its 401) and before any parameter is parsed.

What a route declares is what Litestar itself extracts for its handler: the query parameters
of the handler's kwargs model (its own parameters and those of its dependencies). Litestar has
no public accessor for a handler's kwargs model; `HTTPRoute.route_handler_map` holds it next to
each handler. tests/test_query_parameters.py sends every route of the app its own declared
parameters and an unknown one, so a change there fails the tests rather than every request."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from service.common.errors import FieldError, InvalidInput
from service.common.text import unstorable_reason

_DECLARED = "_declared_query_parameters"


def declared_query_parameters(app: Litestar) -> dict[HTTPRouteHandler, frozenset[str]]:
    """The query parameter names (as spelled in URLs) each route handler of `app` accepts."""
    declared: dict[HTTPRouteHandler, frozenset[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler, kwargs_model in route.route_handler_map.values():
                names = {p.field_alias for p in kwargs_model.expected_query_params}
                declared[handler] = declared.get(handler, frozenset()) | names
    return declared


def _declared_for(request: Request[Any, Any, Any]) -> frozenset[str]:
    state = request.app.state
    declared = state.get(_DECLARED)
    if declared is None:  # built once, at the first request: every route exists by then
        declared = declared_query_parameters(request.app)
        state[_DECLARED] = declared
    return declared.get(request.route_handler, frozenset())  # type: ignore[no-any-return]


async def check_query_parameters(request: Request[Any, Any, Any]) -> None:
    """Refuse unknown query parameters, and query or path values the database cannot store."""
    # Names are echoed back, so long ones are cut (they are unknown whatever their tail).
    unknown = sorted({name[:64] for name in set(request.query_params) - _declared_for(request)})
    if unknown:
        accepted = ", ".join(sorted(_declared_for(request))) or "none"
        raise InvalidInput(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
            f"(this route accepts: {accepted})",
            errors=[FieldError(field=name, message="unknown query parameter") for name in unknown],
        )
    values = [*request.query_params.multi_items(), *request.path_params.items()]
    for name, value in values:
        if isinstance(value, str) and (reason := unstorable_reason(value)) is not None:
            raise InvalidInput(f"{name} {reason}", errors=[FieldError(field=name, message=reason)])

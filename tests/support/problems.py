"""Assertions on RFC 9457 problem answers."""

from __future__ import annotations

from typing import Any


def assert_problem(response: Any, status: int, code: str, field: str | None = None) -> None:
    """The answer is problem+json with this status and code, naming `field` if given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    if field is not None:
        assert field in problem["detail"] or any(
            field in e["field"] for e in problem.get("errors") or []
        ), problem

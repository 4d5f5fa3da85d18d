"""Errors of the charges and commitments API: one type per meaning, each with a stable code."""

from __future__ import annotations

from service.common.errors import Conflict


class CommitmentOverlap(Conflict):
    status, code, title = 409, "commitment_overlap", "Commitment overlaps an existing one"

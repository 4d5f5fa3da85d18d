"""The collector is off inside no_collection() and back as it was after, exceptions included."""

from __future__ import annotations

import gc

import pytest

from service.common.gc_pause import no_collection


def test_the_collector_is_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with no_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), no_collection():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    try:
        with no_collection():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()

"""The hot-swap slot: it follows the alias, keeps a batch's snapshot, survives a broken version."""

from __future__ import annotations

import threading
import time

import pytest

from steep.serving import ServingError
from steep.serving.model_slot import LoadedModel, ModelSlot


class FakeRegistry:
    """The alias the slot follows, and a loader that counts loads (and can fail)."""

    def __init__(self) -> None:
        self.version = "1"
        self.loads: list[str] = []
        self.broken: set[str] = set()

    def resolve(self) -> tuple[str, str]:
        return "m", self.version

    def load(self, version: str) -> LoadedModel:
        self.loads.append(version)
        if version in self.broken:
            raise RuntimeError(f"cannot load v{version}")
        return LoadedModel("m", version, f"run-{version}", summarizer=object())


def test_slot_swaps_only_when_the_alias_moves_and_batches_keep_their_snapshot():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load)
    with pytest.raises(ServingError, match="readyz"):
        _ = slot.current
    assert slot.refresh() and slot.current.version == "1" and slot.ready
    assert not slot.refresh() and reg.loads == ["1"]  # unchanged alias: nothing reloaded
    in_flight = slot.current  # what a running batch holds
    reg.version = "2"
    assert slot.refresh()
    assert slot.current.version == "2" and in_flight.version == "1" and slot.swaps == 1


def test_a_broken_new_version_keeps_the_old_one_serving_and_is_not_reloaded_every_poll():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load)
    slot.refresh()
    reg.version, reg.broken = "2", {"2"}
    assert not slot.refresh() and slot.current.version == "1"
    assert not slot.refresh() and reg.loads == ["1", "2"]
    reg.version = "3"
    assert slot.refresh() and slot.current.version == "3"


def test_a_first_load_that_fails_stops_the_start():
    reg = FakeRegistry()
    reg.broken = {"1"}
    with pytest.raises(RuntimeError, match="cannot load v1"):
        ModelSlot(reg.resolve, reg.load).refresh()


def test_the_watcher_thread_picks_up_a_moved_alias():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load, interval_s=0.02)
    slot.refresh()
    slot.start()
    try:
        reg.version = "2"
        deadline = time.monotonic() + 5
        while slot.current.version != "2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slot.current.version == "2"
    finally:
        slot.stop()


def test_concurrent_refreshes_load_a_new_version_once():
    reg = FakeRegistry()
    slot = ModelSlot(reg.resolve, reg.load)
    slot.refresh()
    reg.version = "2"
    threads = [threading.Thread(target=slot.refresh) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reg.loads == ["1", "2"]

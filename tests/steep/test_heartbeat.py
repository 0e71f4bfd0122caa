"""Activity is a heartbeat: when a run counts as dead, the beating thread, and what a dead driver left."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil

from steep import heartbeat


def test_a_running_run_is_dead_after_three_missed_beats():
    beat = {heartbeat.TAG: "1000", heartbeat.INTERVAL_TAG: "10"}
    assert heartbeat.dead_since("RUNNING", 900, beat, now=1030) is None  # 3 intervals: still alive
    assert heartbeat.dead_since("RUNNING", 900, beat, now=1030.5) == 1000  # dead since its last beat
    assert heartbeat.dead_since("FINISHED", 900, beat, now=9999) is None  # only RUNNING runs can die
    # no beat at all (another tool's run, or before the first beat): three default intervals from its start
    assert heartbeat.dead_since("RUNNING", 1000, {}, now=1000 + 3 * heartbeat.DEFAULT_INTERVAL_S) is None
    assert heartbeat.dead_since("RUNNING", 1000, {}, now=1001 + 3 * heartbeat.DEFAULT_INTERVAL_S) == 1000


class _Client:
    def __init__(self) -> None:
        self.tags: list[tuple[str, str, str]] = []
        self.beats = threading.Semaphore(0)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags.append((run_id, key, value))
        if key == heartbeat.TAG:
            self.beats.release()


def test_the_heartbeat_beats_until_the_block_ends():
    client = _Client()
    with heartbeat.Heartbeat(client, "r1", every_s=0.02):
        for _ in range(4):  # the first beat at entry, then one per interval
            assert client.beats.acquire(timeout=5)
    while client.beats.acquire(blocking=False):  # beats that landed before the block ended
        pass
    assert not client.beats.acquire(timeout=0.2)  # stopped: no beat after the block
    assert client.tags[0] == ("r1", heartbeat.INTERVAL_TAG, "0.02")
    stamps = [float(v) for _, k, v in client.tags if k == heartbeat.TAG]
    assert stamps == sorted(stamps) and len(stamps) >= 4


def test_what_a_dead_driver_left_is_found_and_stopped():
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    assert not psutil.pid_exists(dead_pid)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    orphan = subprocess.Popen(sleeper, env={**os.environ, heartbeat.DRIVER_ENV: str(dead_pid)})
    kept = subprocess.Popen(sleeper, env={**os.environ, heartbeat.DRIVER_ENV: str(os.getpid())})
    try:
        found = {p.pid for p in heartbeat.orphans()}
        assert orphan.pid in found and kept.pid not in found
        assert heartbeat.reap_orphans(grace=5) >= 1
        assert orphan.wait(timeout=10) is not None
        assert kept.poll() is None  # its driver (this test) is alive: left alone
    finally:
        for proc in (orphan, kept):
            proc.kill()
            proc.wait()

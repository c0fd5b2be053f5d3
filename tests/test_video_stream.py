"""Tracking video frames in a thread while the fit works (sigman.video_motion.track_frames)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sigman.video_motion import TRACK_AHEAD, track_frames


def test_frames_come_back_in_order_from_another_thread():
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(TRACK_AHEAD + 20)]  # more than the queue holds
    seen_threads = set()

    def track(frame):
        seen_threads.add(threading.current_thread().name)
        return int(frame[0, 0, 0]) if frame[0, 0, 0] % 3 else None

    timing = {}
    out = list(track_frames(track, frames, background=True, timing=timing))
    assert out == [i if i % 3 else None for i in range(len(frames))]
    assert seen_threads == {"sigman-track"} and timing["track"] > 0
    assert list(track_frames(track, frames, background=False)) == out


def test_a_tracker_error_reaches_the_consumer_and_the_thread_ends():
    def track(frame):
        if frame[0, 0, 0] == 5:
            raise RuntimeError("tracker broke on frame 5")
        return 1

    frames = [np.full((1, 1, 3), i, np.uint8) for i in range(10)]
    got = []
    with pytest.raises(RuntimeError, match="frame 5"):
        for item in track_frames(track, frames):
            got.append(item)
    assert got == [1] * 5
    assert not any(t.name == "sigman-track" for t in threading.enumerate())


def test_stopping_early_ends_the_thread():
    frames = [np.zeros((1, 1, 3), np.uint8)] * (3 * TRACK_AHEAD)
    stream = track_frames(lambda f: 0, frames)
    assert next(stream) == 0
    stream.close()  # the consumer gives up (an error in the fit): the worker must not hang
    assert not any(t.name == "sigman-track" for t in threading.enumerate())

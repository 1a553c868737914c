"""What people are told of a job's progress, from the dispatcher's snapshots, without processes."""

import time

import pytest

from job_state import BatchTime, JobState
from pipeline import DECODING_SHARE, _ProgressMeter


def state(done_s: float = 0.0, batches=(), running=(), finished: bool = False, opened_at: float = 0.0) -> JobState:
    return JobState(
        opened_at=opened_at,
        done_s=done_s,
        batches=tuple(batches),
        running=tuple(running),
        workers=("cpu #1", "cpu #2"),
        finished_at=time.monotonic() if finished else None,
    )


def test_decoding_counts_against_the_files_own_length_and_the_expected_speech_only_grows():
    meter = _ProgressMeter(duration_s=600.0)
    first = meter.measure(decoded_s=60.0, found_s=50.0, decoding=True, state=state())
    assert first.fraction == pytest.approx(DECODING_SHARE * 0.1) and not first.transcribing
    assert meter.expected_s == pytest.approx(500.0)  # a minute held 50 s of speech: ten minutes, 500 s
    meter.measure(decoded_s=120.0, found_s=60.0, decoding=True, state=state())
    assert meter.expected_s == pytest.approx(500.0)  # less speech in the second minute: the total stays
    done = meter.measure(decoded_s=600.0, found_s=300.0, decoding=False, state=state(done_s=150.0))
    assert meter.expected_s == 300.0 and done.fraction == pytest.approx(DECODING_SHARE + (1 - DECODING_SHARE) * 0.5)


def test_a_running_batch_moves_the_bar_at_the_pace_of_those_before_it_but_never_past_its_end():
    now = time.monotonic()
    before = [BatchTime("cpu", 4, speech_s=100.0, started=now - 30, finished=now - 20)]  # 10 s of speech a second
    meter = _ProgressMeter(duration_s=None)
    at_start = meter.measure(0.0, 300.0, decoding=False, state=state(100.0, before, running=[(100.0, now)]))
    later = meter.measure(0.0, 300.0, decoding=False, state=state(100.0, before, running=[(100.0, now - 5)]))
    much_later = meter.measure(0.0, 300.0, decoding=False, state=state(100.0, before, running=[(100.0, now - 60)]))
    assert at_start.fraction < later.fraction < much_later.fraction < 1.0
    speech_part = (much_later.fraction - DECODING_SHARE) / (1 - DECODING_SHARE)
    assert speech_part == pytest.approx((100.0 + 90.0) / 300.0, abs=0.01)  # the batch counts for 90 % at most


def test_the_fraction_never_goes_back_and_is_whole_only_at_the_end():
    meter = _ProgressMeter(duration_s=100.0)
    high = meter.measure(90.0, 10.0, decoding=True, state=state())
    lower = meter.measure(95.0, 10.0, decoding=False, state=state())  # the speech known exactly: more of it
    assert lower.fraction >= high.fraction
    assert meter.measure(100.0, 10.0, decoding=False, state=state(done_s=10.0)).fraction == 0.99
    end = meter.measure(100.0, 10.0, decoding=False, state=state(done_s=10.0, finished=True))
    assert end.fraction == 1.0 and end.left_s == 0.0

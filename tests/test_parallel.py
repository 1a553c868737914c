"""The worker pool with real worker processes on the CPU."""

import os
import threading
import time
from dataclasses import replace

import pytest

import parallel_transcriber
from audio import load_audio
from conftest import tiled
from datatypes import TranscribeOptions, WorkUnit
from devices import parse_devices
from engines import POISON_INDEX, CrashingTranscriber, FailingTranscriber, ShortOfMemoryTranscriber
from job_state import JobCancelled, JobFailed
from models import MAX_BATCH_SIZE
from parallel_transcriber import ParallelTranscriber
from pipeline import DECODING_SHARE, transcribe_file
from vad_splitter import split_audio
from writers import render

SMALL_BATCHES = TranscribeOptions(batch_size=1)


def copies(units: list[WorkUnit], times: int) -> list[WorkUnit]:
    """`units` over again, numbered on as the units of one longer file would be."""
    return [replace(unit, index=index) for index, unit in enumerate(units * times)]


def timed_words(transcript):
    return [(w.start, w.end, w.text) for s in transcript.segments for w in s.words]


def wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def killer(pid: int):
    """A progress callback that kills the process `pid` at the first report, and the event it sets."""
    killed = threading.Event()

    def kill_once(progress):
        if not killed.is_set():
            killed.set()
            os.kill(pid, 9)

    return kill_once, killed


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def composition_units(composition):
    return split_audio(load_audio(composition[0]))


@pytest.fixture(scope="module")
def one_worker(model_spec):
    with ParallelTranscriber(model_spec, ["cpu"]) as pool:
        yield pool


@pytest.fixture(scope="module")
def undisturbed(two_workers, composition):
    return transcribe_file(composition[0], two_workers, SMALL_BATCHES)


def test_parse_devices():
    assert parse_devices("cpu*2") == ["cpu", "cpu"]
    assert parse_devices("cuda:0, cuda:1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cuda") == ["cuda:0"]
    assert parse_devices("cuda:0*2") == ["cuda:0", "cuda:0"]
    for bad in ("gpu", "cuda:x", "cpu*two", ""):
        with pytest.raises(ValueError):
            parse_devices(bad)


def test_auto_puts_two_workers_on_every_gpu(monkeypatch):
    import devices

    monkeypatch.setattr(devices, "gpu_count", lambda: 2)  # this machine has none
    assert parse_devices("auto") == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]


def test_one_and_two_workers_give_the_same_words_and_times(one_worker, undisturbed, composition):
    single = transcribe_file(composition[0], one_worker, SMALL_BATCHES)
    assert undisturbed.workers == 2 and single.workers == 1
    assert timed_words(single) == timed_words(undisturbed)
    assert [c.text for c in single.cues] == [c.text for c in undisturbed.cues]


def test_three_jobs_load_nothing_more(model_spec, jfk, caplog):
    with ParallelTranscriber(model_spec, parse_devices("cpu*2")) as pool:
        for _ in range(3):
            assert transcribe_file(jfk[0], pool).cues
        assert pool.model_loads == 2
        # Gigabytes are free for tiny.en's quarter of a gigabyte per window: the CPU cap applies.
        assert pool.batch_sizes == [MAX_BATCH_SIZE["cpu"]] * 2
    loads = [r.getMessage() for r in caplog.records if "model loaded" in r.getMessage()]
    assert len(loads) == 2 and all(line.startswith("[cpu] model loaded: tiny.en (") for line in loads)
    assert all(line.endswith(f"batch size {MAX_BATCH_SIZE['cpu']}") for line in loads)
    done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job ")]
    assert len(done) == 3 and all("x realtime) on 2 workers" in line for line in done)
    assert any(r.getMessage().startswith("[cpu] unit 0 (") for r in caplog.records)
    assert any(" done: 1 segments" in r.getMessage() for r in caplog.records)


def test_single_device_mode_uses_one_worker_of_the_same_pool(two_workers, jfk):
    loads = two_workers.model_loads
    transcript = transcribe_file(jfk[0], two_workers, all_workers=False)
    assert transcript.workers == 1 and two_workers.model_loads == loads


def test_progress_only_moves_forward_from_the_first_block_to_the_end(two_workers, composition):
    seen = []
    transcribe_file(composition[0], two_workers, SMALL_BATCHES, on_progress=seen.append)
    assert len(seen) >= 3
    fractions = [progress.fraction for progress in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1].left_s == 0
    assert any(0 < fraction < 1 for fraction in fractions if fraction > DECODING_SHARE)  # it moved while transcribing
    # From the first block decoded on, before any batch is back, against the file's own length.
    assert seen[0].decoded_s > 0 and not seen[0].transcribing
    assert seen[0].duration_s == pytest.approx(seen[-1].decoded_s, abs=0.1)
    assert all(set(progress.busy) <= {"cpu #1", "cpu #2"} for progress in seen)
    assert seen[-1].workers == ("cpu #1", "cpu #2")
    assert all(progress.left_s is None or progress.left_s >= 0 for progress in seen)


def test_a_killed_worker_is_replaced_and_the_job_still_finishes_identically(model_spec, composition, undisturbed):
    with ParallelTranscriber(model_spec, ["cpu", "cpu"]) as pool:
        victim = pool.worker_pids()[0]
        kill_once, killed = killer(victim)
        transcript = transcribe_file(composition[0], pool, SMALL_BATCHES, on_progress=kill_once)
        assert killed.is_set() and not alive(victim)
        assert timed_words(transcript) == timed_words(undisturbed)
        assert wait_for(lambda: pool.model_loads == 3)  # the replacement loaded once; nothing else did


def test_a_unit_that_always_kills_its_worker_fails_its_job_and_the_next_job_works(model_spec, composition_units, jfk):
    spec = replace(model_spec, engine=CrashingTranscriber)
    with ParallelTranscriber(spec, ["cpu", "cpu"]) as pool:
        poison = WorkUnit(POISON_INDEX, [(60.0, 62.0)], composition_units[0].audio[:32000])
        job = pool.submit(composition_units[:2] + [poison], SMALL_BATCHES)
        with pytest.raises(JobFailed, match=r"died 3 times on the speech at 1:00.0 \(2.0 s\)"):
            job.segments()
        assert transcribe_file(jfk[0], pool).cues
        assert wait_for(lambda: pool.model_loads == 2 + 3), pool.model_loads  # one load for each replacement


def test_a_batch_out_of_memory_is_done_in_halves_and_the_worker_keeps_the_smaller_size(
    model_spec, jfk, one_worker, capfd
):
    units = copies(split_audio(load_audio(jfk[0])), 18)
    expected = one_worker.submit(units, SMALL_BATCHES).segments()
    spec = replace(model_spec, engine=ShortOfMemoryTranscriber)  # more than 2 windows at once fail
    with ParallelTranscriber(spec, ["cpu"]) as pool:
        first = pool.submit(units, TranscribeOptions()).segments()
        second = pool.submit(units, TranscribeOptions()).segments()
    assert [s.text for s in first] == [s.text for s in expected] == [s.text for s in second]
    messages = [line for line in capfd.readouterr().err.splitlines() if "out of memory with" in line]
    # The first job's longest batch (8 windows) shrinks the worker's batch size to 4, then 2; its
    # other batches are split to that size before they run, and the second job's batches are no
    # bigger than 2, so nothing else runs out of memory.
    assert messages == [
        "[cpu] out of memory with 8 windows: batch size now 4",
        "[cpu] out of memory with 4 windows: batch size now 2",
    ]
    assert pool.batch_sizes == [2]


def test_an_error_inside_a_unit_fails_the_job_but_keeps_the_worker(model_spec, composition_units, jfk):
    with ParallelTranscriber(replace(model_spec, engine=FailingTranscriber), ["cpu"]) as pool:
        loads = pool.model_loads
        poison = WorkUnit(POISON_INDEX, [(60.0, 62.0)], composition_units[0].audio[:32000])
        with pytest.raises(JobFailed, match=f"failed in unit {POISON_INDEX}"):
            pool.submit([poison], TranscribeOptions()).segments()
        assert transcribe_file(jfk[0], pool).cues
        assert pool.model_loads == loads


def test_a_batch_that_cannot_be_sent_fails_its_job_and_the_next_job_works(two_workers, jfk):
    broken = WorkUnit(0, [(0.0, 1.0)], "not audio")  # its samples cannot be put in shared memory
    with pytest.raises(JobFailed, match="failed in unit 0"):
        two_workers.submit([broken], TranscribeOptions()).segments()
    assert transcribe_file(jfk[0], two_workers).cues


def test_two_jobs_at_once_share_the_workers(two_workers, composition_units):
    started: dict[str, float] = {}
    finished: dict[str, float] = {}

    def run(name):
        job = two_workers.submit(copies(composition_units, 3), SMALL_BATCHES)
        while not job.wait(timeout=0.05):
            if job.state.busy:
                started.setdefault(name, time.monotonic())
        started.setdefault(name, time.monotonic())
        job.segments()
        finished[name] = time.monotonic()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert set(finished) == {"a", "b"}
    assert started["b"] < finished["a"] and started["a"] < finished["b"]


def test_cancel_drops_pending_units_and_keeps_workers(two_workers, composition_units, jfk):
    loads = two_workers.model_loads
    job = two_workers.submit(copies(composition_units, 4), SMALL_BATCHES)
    two_workers.cancel(job)
    with pytest.raises(JobCancelled):
        job.segments()
    begun = time.monotonic()
    assert transcribe_file(jfk[0], two_workers).cues
    assert time.monotonic() - begun < 30
    assert two_workers.model_loads == loads


def test_units_given_twice_fail_the_job_instead_of_hanging(two_workers, composition_units):
    with pytest.raises(JobFailed, match="same index"):
        two_workers.submit(composition_units * 2, SMALL_BATCHES).segments()


def test_shutdown_leaves_no_worker_processes(model_spec):
    pool = ParallelTranscriber(model_spec, ["cpu", "cpu"])
    pids = pool.worker_pids()
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    pool.shutdown()
    assert not any(alive(pid) for pid in pids)


@pytest.fixture(scope="module")
def four_minutes(composition, tmp_path_factory):
    """The test composition twice over: enough units for several full batches at the CPU's size."""
    return tiled(composition[0], 2, tmp_path_factory.mktemp("four-minutes") / "four-minutes.wav")


def test_the_same_file_gives_byte_identical_subtitles_however_it_is_run(model_spec, two_workers, four_minutes):
    # The default batch size (8 on this CPU): which units share a batch changes the model's arithmetic.
    alone = render(transcribe_file(four_minutes, two_workers), "srt")
    assert render(transcribe_file(four_minutes, two_workers, all_workers=False), "srt") == alone

    beside: dict[str, str] = {}
    other = threading.Thread(
        target=lambda: beside.setdefault("other", render(transcribe_file(four_minutes, two_workers), "srt"))
    )
    other.start()
    beside["this"] = render(transcribe_file(four_minutes, two_workers), "srt")
    other.join(timeout=300)
    assert beside == {"this": alone, "other": alone}

    with ParallelTranscriber(model_spec, ["cpu", "cpu"]) as pool:
        kill_once, killed = killer(pool.worker_pids()[1])
        crashed = render(transcribe_file(four_minutes, pool, on_progress=kill_once), "srt")
        assert killed.is_set() and pool.model_loads == 3
    assert crashed == alone


def test_without_room_in_shared_memory_the_samples_go_through_the_pipe(two_workers, jfk, monkeypatch):
    """A container's shared memory is 64 MB unless it is given more: a batch that would not fit twice
    goes through the executor's pipe, with the same subtitles."""
    through_shared_memory = transcribe_file(jfk[0], two_workers).cues
    monkeypatch.setattr(parallel_transcriber, "SHARED_MEMORY", "/no/such/folder")
    assert not parallel_transcriber._shared_memory_has_room(1)
    through_the_pipe = transcribe_file(jfk[0], two_workers).cues
    assert [(cue.start, cue.end, cue.text) for cue in through_the_pipe] == [
        (cue.start, cue.end, cue.text) for cue in through_shared_memory
    ]

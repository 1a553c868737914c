"""The dispatcher's decisions, with workers that are not processes: each test decides when they answer."""

import queue
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
import pytest

from datatypes import SAMPLE_RATE, Segment, TranscribeOptions, WorkUnit
from dispatcher import AddUnits, CancelJob, CloseJob, Dispatcher
from job_state import JobCancelled, JobFailed
from worker_protocol import Detected, Transcribed

ENGLISH = TranscribeOptions(language="en")


@dataclass
class Call:
    kind: str  # "transcribe" or "detect"
    units: list[WorkUnit]
    options: TranscribeOptions | None
    future: Future
    sent: float = field(default_factory=time.monotonic)  # the fake worker starts at once

    @property
    def indexes(self) -> list[int]:
        return [unit.index for unit in self.units]

    def answer(self, batch_size: int = 8) -> None:
        segments = [[Segment(unit.spans[0][0], unit.spans[0][1], f"unit {unit.index}")] for unit in self.units]
        self.future.set_result(Transcribed(segments, batch_size, self.sent, time.monotonic()))

    def crash(self) -> None:
        self.future.set_exception(BrokenProcessPool("the worker died"))


class FakeWorker:
    def __init__(self, device: str = "cpu", batch_size_after_restart: int = 8):
        self.device = device
        self.calls: queue.Queue[Call] = queue.Queue()
        self.restarts = 0
        self.batch_size_after_restart = batch_size_after_restart
        self.replacement: Future | None = None  # a restart's answer, left to the test when set

    def transcribe(self, units, options) -> Future:
        return self._call("transcribe", units, options)

    def detect_language(self, unit) -> Future:
        return self._call("detect", [unit], None)

    def restart(self) -> Future:
        self.restarts += 1
        if self.replacement is not None:
            return self.replacement
        loaded: Future = Future()
        loaded.set_result(self.batch_size_after_restart)
        return loaded

    def next_call(self) -> Call:
        return self.calls.get(timeout=5)

    def no_call(self, seconds: float = 0.3) -> bool:
        try:
            self.calls.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def _call(self, kind, units, options) -> Future:
        future: Future = Future()
        self.calls.put(Call(kind, list(units), options, future))
        return future


def eventually(condition, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def unit(index: int, seconds: float = 10.0) -> WorkUnit:
    return WorkUnit(index, [(30.0 * index, 30.0 * index + seconds)], np.zeros(int(seconds * SAMPLE_RATE), np.float32))


@pytest.fixture
def make_dispatcher():
    made = []

    def make(workers, batch_sizes=None) -> Dispatcher:
        made.append(Dispatcher(workers, batch_sizes or [8] * len(workers)))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.stop()


def run_to_end(workers: list[FakeWorker], job) -> list[list[int]]:
    """Answer every call until the job ends; the batches sent, in the order they were sent."""
    sent = []
    while not job.finished.is_set():
        for worker in workers:
            try:
                call = worker.calls.get(timeout=0.05)
            except queue.Empty:
                continue
            sent.append(call.indexes)
            call.answer()
    return sent


@pytest.mark.parametrize(
    "workers, arrival", [(1, "all at once"), (1, "one by one"), (2, "one by one"), (3, "in pairs")]
)
def test_batches_depend_on_the_job_alone(make_dispatcher, workers, arrival):
    fakes = [FakeWorker() for _ in range(workers)]
    dispatcher = make_dispatcher(fakes, [4] * workers)
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    units = [unit(index) for index in range(14)]
    step = {"all at once": 14, "one by one": 1, "in pairs": 2}[arrival]
    for first in range(0, 14, step):
        dispatcher.send(AddUnits(job, units[first : first + step]))
    dispatcher.send(CloseJob(job))
    sent = run_to_end(fakes, job)
    # 1, 2, 4 units, then the job's batch size (4), and what is left at the end in halves: in file order.
    assert sorted(sent) == [[0], [1, 2], [3, 4, 5, 6], [7, 8, 9, 10], [11, 12], [13]]
    assert [segment.text for segment in job.segments()] == [f"unit {index}" for index in range(14)]


def test_a_batch_waits_to_be_full_while_the_files_units_still_come(make_dispatcher):
    worker = FakeWorker()
    dispatcher = make_dispatcher([worker], [4])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(job, [unit(0), unit(1)]))
    first = worker.next_call()
    assert first.indexes == [0]  # the first batch is one unit: the worker starts at once
    assert worker.no_call()  # [1] alone would be half a batch of 2
    dispatcher.send(AddUnits(job, [unit(2)]))
    assert worker.next_call().indexes == [1, 2]
    first.answer()
    dispatcher.send(AddUnits(job, [unit(3)]))
    assert worker.no_call()
    dispatcher.send(CloseJob(job))  # no more units: what is left goes as it is
    assert worker.next_call().indexes == [3]


def test_the_longest_batch_goes_first_and_waits_only_behind_the_least_loaded_worker(make_dispatcher):
    first, second = FakeWorker("cpu"), FakeWorker("cpu")
    dispatcher = make_dispatcher([first, second], [2, 2])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    lengths = [5, 5, 5, 20, 20, 5, 1]  # batches [0], [1, 2], [3, 4], [5, 6]
    dispatcher.send(AddUnits(job, [unit(index, seconds) for index, seconds in enumerate(lengths)]))
    dispatcher.send(CloseJob(job))
    assert first.next_call().indexes == [3, 4]  # 40 s
    running = second.next_call()
    assert running.indexes == [1, 2]  # 10 s
    assert second.next_call().indexes == [5, 6]  # 6 s, queued behind the worker with less in flight
    assert first.no_call() and second.no_call()  # never more than two in flight; [0] waits: 40 s > 16 s
    running.answer()
    assert second.next_call().indexes == [0]  # 6 s in flight on the second now, 40 s on the first


def test_jobs_take_turns_on_a_worker(make_dispatcher):
    worker = FakeWorker()
    dispatcher = make_dispatcher([worker], [1])
    jobs = [dispatcher.open_job(ENGLISH, all_workers=True) for _ in range(2)]
    for offset, job in zip((0, 100), jobs):
        dispatcher.send(AddUnits(job, [unit(offset + index) for index in range(4)]))
        dispatcher.send(CloseJob(job))
    owners = []
    for _ in range(8):
        call = worker.next_call()
        owners.append("a" if call.indexes[0] < 100 else "b")
        call.answer(batch_size=1)
    # "a" filled the worker's two places before "b" came; from then on they alternate, a newcomer first.
    assert owners == ["a", "a", "b", "a", "b", "a", "b", "b"]
    assert all(job.wait(5) for job in jobs)


def test_a_crashed_batch_is_sent_again_whole_and_fails_its_job_after_three_tries(make_dispatcher):
    worker = FakeWorker(batch_size_after_restart=3)
    dispatcher = make_dispatcher([worker], [4])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(job, [unit(index) for index in range(3)]))
    dispatcher.send(CloseJob(job))
    first, second = worker.next_call(), worker.next_call()
    assert (first.indexes, second.indexes) == ([1, 2], [0])  # longest first
    first.crash()  # the process died: both batches in flight on it are lost
    second.crash()
    again = [worker.next_call(), worker.next_call()]
    assert (
        sorted(call.indexes for call in again) == [[0], [1, 2]] and worker.restarts == 1
    )  # one restart for one dead process
    assert eventually(lambda: dispatcher.batch_sizes == [3])  # the new process's batch size
    calls = {tuple(call.indexes): call for call in again}
    calls[(0,)].answer()
    calls[(1, 2)].crash()  # [1, 2] kills its worker every time: a second time
    third = worker.next_call()
    assert third.indexes == [1, 2]
    third.crash()
    with pytest.raises(JobFailed, match=r"died 3 times on the speech at 0:30.0 \(10.0 s\)"):
        job.segments()


def test_cancel_drops_the_rest_and_other_jobs_go_on(make_dispatcher):
    worker = FakeWorker()
    dispatcher = make_dispatcher([worker], [1])
    doomed = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(doomed, [unit(index) for index in range(5)]))
    running = [worker.next_call(), worker.next_call()]
    dispatcher.send(CancelJob(doomed))
    with pytest.raises(JobCancelled):
        doomed.segments()
    other = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(other, [unit(100)]))
    dispatcher.send(CloseJob(other))
    for call in running:
        call.answer()  # late answers for the cancelled job are dropped
    call = worker.next_call()
    assert call.indexes == [100]
    call.answer()
    assert [segment.text for segment in other.segments()] == ["unit 100"]
    assert worker.no_call()


def test_the_language_is_detected_once_from_the_first_speech(make_dispatcher):
    worker = FakeWorker()
    dispatcher = make_dispatcher([worker], [8])
    job = dispatcher.open_job(TranscribeOptions(), all_workers=True)
    dispatcher.send(AddUnits(job, [unit(0), unit(1), unit(2)]))
    detect = worker.next_call()
    assert detect.kind == "detect" and detect.indexes == [0]
    detect.future.set_result(Detected("de"))
    dispatcher.send(CloseJob(job))
    calls = [worker.next_call() for _ in range(2)]
    assert all(call.kind == "transcribe" and call.options.language == "de" for call in calls)


def test_a_workers_smaller_batch_size_is_used_by_the_next_job(make_dispatcher):
    worker = FakeWorker()
    dispatcher = make_dispatcher([worker], [8])
    first = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(first, [unit(0)]))
    dispatcher.send(CloseJob(first))
    worker.next_call().answer(batch_size=2)  # it ran out of memory: now 2 windows at most
    first.wait(5)
    second = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(second, [unit(index) for index in range(10)]))
    dispatcher.send(CloseJob(second))
    assert second.wait(0) is False and max(len(batch) for batch in run_to_end([worker], second)) == 2


def test_the_job_says_when_its_first_batch_began_and_how_long_its_workers_waited(make_dispatcher):
    fakes = [FakeWorker(), FakeWorker()]
    dispatcher = make_dispatcher(fakes, [1, 1])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    time.sleep(0.2)  # no units yet: both workers wait
    dispatcher.send(AddUnits(job, [unit(0), unit(1)]))
    dispatcher.send(CloseJob(job))
    first, second = fakes[0].next_call(), fakes[1].next_call()
    time.sleep(0.3)
    first.answer()
    time.sleep(0.2)  # the first worker has nothing left of the job
    second.answer()
    assert job.wait(5)

    state = job.state
    assert 0.2 <= state.first_batch_s < 0.4
    open_s = state.finished_at - state.opened_at
    assert 0.7 <= open_s < 1.2
    # Worker 1 waited 0.2 s before and 0.2 s after its batch, worker 2 the first 0.2 s.
    assert state.workers_idle_s == pytest.approx(
        2 * open_s - (first.future.result().finished - first.sent) - (second.future.result().finished - second.sent)
    )
    assert 0.5 <= state.workers_idle_s < 0.9


def test_a_large_batch_size_starts_with_an_eighth_of_it_and_ends_in_halves_of_a_quarter_or_more(make_dispatcher):
    worker = FakeWorker()
    dispatcher = make_dispatcher([worker], [32])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(job, [unit(index) for index in range(117)]))
    dispatcher.send(CloseJob(job))
    # 4 + 8 + 16 + 32 + 32 = 92 units, then the 25 left in halves: 13, then 12 (its halves would be under 8).
    assert sorted(map(len, run_to_end([worker], job))) == sorted([4, 8, 16, 32, 32, 13, 12])


def batch_sizes_of_an_hour(workers: list[FakeWorker], make_dispatcher, all_workers: bool = True) -> list[int]:
    """The sizes of the batches of a 60-minute file (120 units), in file order, on `workers` of batch size 32."""
    dispatcher = make_dispatcher(workers, [32] * len(workers))
    job = dispatcher.open_job(ENGLISH, all_workers, audio_s=3600.0)
    dispatcher.send(AddUnits(job, [unit(index) for index in range(120)]))
    dispatcher.send(CloseJob(job))
    sent = run_to_end(workers, job)
    return [len(batch) for batch in sorted(sent)]


def test_a_long_file_is_shared_among_the_servers_gpus(make_dispatcher):
    # On one GPU the batches are full but the last: the 28 units left when the job closes, in halves.
    assert batch_sizes_of_an_hour([FakeWorker("cuda:0")], make_dispatcher) == [4, 8, 16, 32, 32, 14, 14]
    # On two, each has a share of what is left: the last batches get smaller as the end comes near.
    two_gpus = [FakeWorker("cuda:0"), FakeWorker("cuda:0"), FakeWorker("cuda:1"), FakeWorker("cuda:1")]
    assert batch_sizes_of_an_hour(two_gpus, make_dispatcher) == [4, 8, 16, 32, 30, 15, 8, 7]
    # On eight, batches of 32 would be four; the file's eighth is 15 windows, then less, never under 8.
    eight_gpus = [FakeWorker(f"cuda:{index}") for index in range(8)]
    assert batch_sizes_of_an_hour(eight_gpus, make_dispatcher) == [4, 8, 14, 12, 11, 9] + [8] * 7 + [6]
    # CPU workers share one machine's cores: the same batches on one as on eight.
    eight_cpu_workers = [FakeWorker("cpu") for _ in range(8)]
    assert batch_sizes_of_an_hour(eight_cpu_workers, make_dispatcher) == [4, 8, 16, 32, 32, 14, 14]


def test_a_file_has_the_same_batches_with_or_without_multi_gpu(make_dispatcher):
    everywhere = batch_sizes_of_an_hour([FakeWorker(f"cuda:{index}") for index in range(4)], make_dispatcher)
    one_gpu_of_four = [FakeWorker(f"cuda:{index}") for index in range(4)]
    assert batch_sizes_of_an_hour(one_gpu_of_four, make_dispatcher, all_workers=False) == everywhere


def test_a_single_device_job_uses_every_worker_of_one_gpu(make_dispatcher):
    fakes = [FakeWorker("cuda:0"), FakeWorker("cuda:0"), FakeWorker("cuda:1"), FakeWorker("cuda:1")]
    dispatcher = make_dispatcher(fakes, [1] * 4)
    first = dispatcher.open_job(ENGLISH, all_workers=False)
    second = dispatcher.open_job(ENGLISH, all_workers=False)
    for job in (first, second):
        dispatcher.send(AddUnits(job, [unit(0), unit(1)]))
        dispatcher.send(CloseJob(job))
    run_to_end(fakes, second)
    run_to_end(fakes, first)
    assert sorted([first.worker_indexes, second.worker_indexes]) == [[0, 1], [2, 3]]
    assert {batch.device for batch in first.state.batches} == {fakes[first.worker_indexes[0]].device}
    assert len(first.state.batches) == 2  # its two batches: both workers of its GPU may take one


def test_a_single_device_job_keeps_to_one_cpu_worker(make_dispatcher):
    fakes = [FakeWorker("cpu"), FakeWorker("cpu")]
    dispatcher = make_dispatcher(fakes, [1, 1])
    job = dispatcher.open_job(ENGLISH, all_workers=False)
    dispatcher.send(AddUnits(job, [unit(0), unit(1)]))
    dispatcher.send(CloseJob(job))
    run_to_end(fakes, job)
    assert len(job.worker_indexes) == 1


def test_a_dead_worker_takes_no_work_until_it_is_back_and_none_if_it_cannot_come_back(make_dispatcher):
    slow, steady = FakeWorker("node-2 cpu"), FakeWorker("node-1 cpu")
    slow.replacement = Future()  # a Ray actor whose node is gone waits for room in the cluster
    dispatcher = make_dispatcher([slow, steady], [1, 1])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(job, [unit(index) for index in range(4)]))
    dispatcher.send(CloseJob(job))
    on_slow = [slow.next_call(), slow.next_call()]
    for call in on_slow:
        call.crash()
    sent = run_to_end([steady], job)  # the whole job, on the one that is up
    assert sorted(index for batch in sent for index in batch) == [0, 1, 2, 3] and slow.no_call()

    slow.replacement.set_result(1)  # back: it takes work again
    again = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(again, [unit(0), unit(1)]))
    dispatcher.send(CloseJob(again))
    slow.next_call().answer()
    steady.next_call().answer()
    assert again.wait(5)

    slow.replacement = Future()
    slow.replacement.set_exception(RuntimeError("no more restarts"))
    steady.replacement = slow.replacement
    last = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(last, [unit(0), unit(1)]))
    dispatcher.send(CloseJob(last))
    slow.next_call().crash()
    steady.next_call().crash()
    with pytest.raises(JobFailed, match="no worker is left to run it"):
        last.segments()
    with pytest.raises(JobFailed, match="no worker is left to run it"):
        dispatcher.open_job(ENGLISH, all_workers=True).segments()


def test_a_worker_that_joins_serves_the_jobs_already_open(make_dispatcher):
    first, joining = FakeWorker("node-1 cpu"), FakeWorker("node-3 cpu")
    dispatcher = make_dispatcher([first], [1])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(job, [unit(index) for index in range(4)]))
    held = [first.next_call(), first.next_call()]  # the first worker is full
    dispatcher.add_worker(joining, 1)
    dispatcher.send(CloseJob(job))
    joined = joining.next_call()
    for call in [*held, joined]:
        call.answer()
    run_to_end([first, joining], job)
    assert len(job.segments()) == 4 and len(dispatcher.batch_sizes) == 2
    assert {batch.device for batch in job.state.batches} == {"node-1 cpu", "node-3 cpu"}


def test_where_each_unit_has_its_own_language_nothing_waits_for_one_detection(make_dispatcher):
    worker = FakeWorker()
    dispatcher = make_dispatcher([worker], [1])
    job = dispatcher.open_job(TranscribeOptions(multilingual=True), all_workers=True)
    dispatcher.send(AddUnits(job, [unit(0), unit(1)]))
    dispatcher.send(CloseJob(job))
    calls = [worker.next_call(), worker.next_call()]
    assert [call.kind for call in calls] == ["transcribe", "transcribe"]  # the worker detects per unit
    assert all(call.options.language is None and call.options.multilingual for call in calls)
    for call in calls:
        call.answer()
    assert len(job.segments()) == 2


def test_progress_names_each_worker_and_numbers_those_that_share_a_device(make_dispatcher):
    fakes = [FakeWorker("cpu"), FakeWorker("cpu"), FakeWorker("cuda:0")]
    dispatcher = make_dispatcher(fakes, [1, 1, 1])
    job = dispatcher.open_job(ENGLISH, all_workers=True)
    dispatcher.send(AddUnits(job, [unit(index) for index in range(4)]))
    dispatcher.send(CloseJob(job))
    first = fakes[0].next_call()
    for fake in fakes[1:]:
        fake.next_call()
    first.answer()
    assert eventually(lambda: job.state.batches)
    assert job.state.workers == ("cpu #1", "cpu #2", "cuda:0")
    # The second CPU worker and the GPU have not answered: they are busy, by name.
    assert {"cpu #2", "cuda:0"} <= set(job.state.busy) <= set(job.state.workers)

"""The worker pool: jobs in, segments out, over persistent workers of any kind.

`parallel_transcriber.ParallelTranscriber` runs the workers as local processes, `ray_workers.RayTranscriber`
as actors on a cluster; the pipeline and the doors see only this class. Each kind also counts its
`model_loads` and gives its `worker_pids()`.
"""

from dataclasses import replace

from datatypes import TranscribeOptions, WorkUnit
from dispatcher import AddUnits, CancelJob, CloseJob, Dispatcher, Job
from worker import ModelSpec
from worker_protocol import WorkerHandle


class WorkerPool:
    """Workers with one model loaded each, and the dispatcher that hands them batches."""

    def __init__(self, spec: ModelSpec, workers: list[WorkerHandle], batch_sizes: list[int], multilingual: bool):
        self.spec = spec
        self.multilingual = multilingual
        self._handles = workers
        self._closed = False
        self._dispatcher = Dispatcher(workers, batch_sizes)

    @property
    def devices(self) -> list[str]:
        """Each worker's device, such as cuda:0 (or node-2 cuda:1 on a cluster)."""
        return [worker.device for worker in self._handles]

    @property
    def batch_sizes(self) -> list[int]:
        """The batch size of each worker: what its device's free memory fitted when its model loaded,
        smaller after a batch ran out of memory."""
        return self._dispatcher.batch_sizes

    def open_job(self, options: TranscribeOptions, all_workers: bool = True, audio_s: float | None = None) -> Job:
        """Start a job whose units come later (`add_units`, then `close_job`), so that the first
        units are transcribed while the rest of the file is still being decoded.
        `all_workers=False` keeps the job on one device (single-device mode); `audio_s`, the file's
        length where known, lets a long file's batches be shared among many devices."""
        if not self.multilingual:
            options = replace(options, language="en", multilingual=False)
        return self._dispatcher.open_job(options, all_workers, audio_s=audio_s)

    def detect(self, unit: WorkUnit) -> tuple[str, float]:
        """The language spoken in `unit`, and how sure the model is, from whichever worker is free."""
        job = self._dispatcher.open_job(TranscribeOptions(), all_workers=True, detect_only=True)
        self.add_units(job, [unit])
        job.segments()  # waits; raises JobFailed or JobCancelled
        return job.state.language, job.state.language_probability

    def add_units(self, job: Job, units: list[WorkUnit]) -> None:
        """More units of an open job, in file order."""
        self._dispatcher.send(AddUnits(job, units))

    def close_job(self, job: Job) -> None:
        """No more units will come: the job ends when the ones it has are done."""
        self._dispatcher.send(CloseJob(job))

    def submit(self, units: list[WorkUnit], options: TranscribeOptions, all_workers: bool = True) -> Job:
        """A job with all its units known up front."""
        job = self.open_job(options, all_workers)
        self.add_units(job, units)
        self.close_job(job)
        return job

    def cancel(self, job: Job) -> None:
        """Stop the job: its units not yet run are dropped, its caller told JobCancelled."""
        self._dispatcher.send(CancelJob(job))

    def shutdown(self) -> None:
        """Stop dispatching: jobs still open fail. The kinds of pool then stop their workers."""
        self._closed = True
        self._dispatcher.stop()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

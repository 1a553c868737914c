"""The page's jobs: each one (a file, or a batch of files) runs in a thread of its own and outlives the page
that started it. A reload, or the job's address opened later, shows it again, running or ended, for as
long as results are kept; its record lies in its folder (`results.JobRecord`), so that a restarted
server still shows the jobs that ended, and those it stopped, as interrupted, with their uploads.

Only the browser that started a job (and, with a login, only its user) can see it.
"""

import logging
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import messages
from audio import has_picture
from datatypes import Cue, Transcript
from editing import EditedCue, apply_edits, check_edits, unsure_words
from jobs import JobOptions, JobRequest, JobService
from links import LinkError
from muxing import CONTAINERS, MuxError, with_subtitles
from pipeline import Progress
from results import (
    CANCELLED,
    DONE,
    ENDED,
    FAILED,
    INTERRUPTED,
    NO_SPEECH,
    RUNNING,
    WAITING,
    FileOutcome,
    JobRecord,
    is_job_id,
)
from writers import read_json, write

log = logging.getLogger("whisper_for_subs")
RECENT = 12  # jobs listed for a browser
# A script's job (one no browser can open again) that nobody has followed for this long is cancelled:
# nobody could fetch its result any more.
UNWATCHED_S = 30.0


class PageJob:
    """One job of the page and what the page shows of it now. Its thread changes it through `update`;
    pages wait for a change with `wait_for_change`."""

    def __init__(self, record: JobRecord, folder: Path):
        self.record = record
        self.folder = folder
        self.cancel = threading.Event()
        self.progress: Progress | None = None  # of the file running
        self.cues: list[Cue] = []  # of the file running, as far as it is done
        self.current = 0  # the file running, or the last one
        self.waiting = False  # for a place among the running jobs
        self.downloading = False  # its link
        self.watched_at = time.monotonic()  # when a page or a script last looked at it
        self.version = 0
        self._changed = threading.Condition()

    @property
    def ended(self) -> bool:
        """Whether the job has ended, well or not."""
        return self.record.state in ENDED

    def update(self, **changes) -> None:
        """Change what the page shows of the job, and wake the pages that wait for a change."""
        with self._changed:
            for name, value in changes.items():
                setattr(self, name, value)
            self.version += 1
            self._changed.notify_all()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Wait until the job changed since version `seen` (or `timeout`); the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def transcript(self, index: int) -> Transcript | None:
        """The transcript of file `index`, as last saved (edited, else the machine's), where there is one."""
        outcome = self.record.files[index]
        name = outcome.edited or outcome.transcript
        if not name:
            return None
        try:
            return read_json((self.folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


class PageJobs:
    """The page's jobs, running and ended, by id."""

    def __init__(self, service: JobService, results_dir: Path, fetch_link: Callable[[str, Path], Path]):
        self.service = service
        self.results_dir = results_dir
        self.fetch_link = fetch_link  # (url, folder) -> the media's path there; raises LinkError
        self._jobs: dict[str, PageJob] = {}
        self._lock = threading.Lock()
        self._load_records()
        threading.Thread(target=self._cancel_unwatched, name="unwatched-jobs", daemon=True).start()

    def start(
        self,
        folder: Path,
        inputs: list[tuple[Path, str, str]],
        request: JobRequest,
        options: JobOptions,
        owner: str,
        user: str | None,
        link: str = "",
    ) -> PageJob:
        """Run `inputs` ((the file in the job's folder, its name as the user gave it, its subtitles' stem))
        one after another; or the media of `link`, fetched into the job's folder first. An empty `owner`
        is a script's job, which is cancelled once nobody follows it."""
        files = [FileOutcome(source.name, name, stem) for source, name, stem in inputs] or [FileOutcome("", link, "")]
        record = JobRecord(folder.name, owner, user, time.time(), asdict(request), files)
        record.save(folder)
        job = PageJob(record, folder)
        with self._lock:
            self._jobs[record.id] = job
        threading.Thread(target=self._run, args=(job, options, link), name=f"job-{record.id[:8]}", daemon=True).start()
        return job

    def run_again(self, job: PageJob, options: JobOptions) -> PageJob:
        """An ended job started over with its own uploads (an interrupted one, say), under the same address."""
        record = replace(
            job.record,
            state=WAITING,
            message="",
            archive="",
            files=[FileOutcome(outcome.source, outcome.name, outcome.stem) for outcome in job.record.files],
        )
        record.save(job.folder)
        again = PageJob(record, job.folder)
        with self._lock:
            self._jobs[record.id] = again
        threading.Thread(target=self._run, args=(again, options, ""), name=f"job-{record.id[:8]}", daemon=True).start()
        return again

    def find(self, job_id: str, owner: str, user: str | None) -> PageJob | None:
        """The job with `job_id` where `owner` (and `user`) may see it; None otherwise, or once it expired.
        An empty owner stands for scripts, which know a job by its id alone."""
        if not is_job_id(job_id):
            return None
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not job.folder.is_dir():
            return None
        if (owner and job.record.owner != owner) or job.record.user != user:
            return None
        return job

    def forget(self, job: PageJob) -> None:
        """Delete an ended job and its folder (a script's job that failed: nobody can ask for it again)."""
        with self._lock:
            self._jobs.pop(job.record.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    def recent(self, owner: str, user: str | None) -> list[JobRecord]:
        """The jobs of this browser (and user), the newest first, that are still kept."""
        with self._lock:
            jobs = [
                job
                for job in self._jobs.values()
                if job.record.owner == owner and job.record.user == user and job.folder.is_dir()
            ]
        return [job.record for job in sorted(jobs, key=lambda job: -job.record.created)[:RECENT]]

    def _load_records(self) -> None:
        """The records of earlier runs of the server; a job it stopped is interrupted."""
        for folder in self.results_dir.iterdir() if self.results_dir.is_dir() else []:
            record = JobRecord.load(folder)
            if record is None:
                continue
            if record.state not in ENDED:
                record.state, record.message = INTERRUPTED, messages.as_sentence(messages.INTERRUPTED)
                for outcome in record.files:
                    if outcome.state not in ENDED:
                        outcome.state = INTERRUPTED
                record.save(folder)
            self._jobs[record.id] = PageJob(record, folder)

    def _cancel_unwatched(self) -> None:
        while True:
            time.sleep(UNWATCHED_S / 6)
            with self._lock:
                jobs = list(self._jobs.values())
            for job in jobs:
                if not job.record.owner and not job.ended and time.monotonic() - job.watched_at > UNWATCHED_S:
                    log.info("job %s: nobody follows it any more; cancelled", job.record.id)
                    job.cancel.set()

    # The job's thread

    def _run(self, job: PageJob, options: JobOptions, link: str) -> None:
        try:
            with self.service.admitted():
                if link:
                    self._download(job, link)
                for index in range(len(job.record.files)):
                    if job.cancel.is_set():
                        break
                    self._run_file(job, index, options)
            self._end(job)
        except messages.UserError as error:  # the queue is full
            self._end(job, error.sentence)
        except LinkError as error:
            self._end(job, messages.explain(error).sentence)
        except Exception:  # a bug: the job fails, the server serves on
            log.exception("job %s failed", job.record.id)
            self._end(job, "The job failed on an internal error; the server's log says more.")

    def _download(self, job: PageJob, link: str) -> None:
        """Fetch the link's media into the job's folder: the job's one file."""
        job.update(downloading=True)
        try:
            source = self.fetch_link(link, job.folder)
        finally:
            job.update(downloading=False)
        job.record.files = [FileOutcome(source.name, source.name, source.stem)]
        job.record.save(job.folder)

    def _run_file(self, job: PageJob, index: int, options: JobOptions) -> None:
        outcome = job.record.files[index]
        outcome.state = RUNNING
        job.record.state = RUNNING
        job.record.save(job.folder)
        job.update(current=index, progress=None, cues=[], waiting=False)
        source = job.folder / outcome.source
        try:
            transcript = self.service.run(
                source,
                options,
                on_progress=lambda progress: job.update(progress=progress, waiting=False),
                on_cues=lambda cues: job.update(cues=cues),
                cancel=job.cancel,
                on_waiting=lambda: job.update(waiting=True),
            )
        except messages.Cancelled:
            outcome.state, outcome.message = CANCELLED, "Cancelled."
        except messages.UserError as error:
            if self.service.counter.draining:  # the server stops: it did not fail, it was interrupted
                outcome.state, outcome.message = INTERRUPTED, messages.as_sentence(messages.INTERRUPTED)
            else:
                outcome.state, outcome.message = FAILED, error.sentence
        else:
            self._keep(job, outcome, transcript, options)
        job.record.save(job.folder)
        job.update()

    def _keep(self, job: PageJob, outcome: FileOutcome, transcript: Transcript, options: JobOptions) -> None:
        """Write a finished file's subtitles, its player's track and its transcript beside it."""
        if not transcript.cues:
            outcome.state, outcome.message = NO_SPEECH, messages.as_sentence(messages.NO_SPEECH)
            return
        self._write(job, outcome, transcript, options)
        outcome.transcript = write(transcript, job.folder / f"{outcome.stem}.machine.json", "json").name
        outcome.picture = has_picture(job.folder / outcome.source)
        outcome.state = DONE
        unsure = len(unsure_words(transcript))
        outcome.message = (
            f"{transcript.duration:.1f} s of audio ({transcript.language}) in "
            f"{transcript.wall_seconds:.1f} s, {transcript.realtime_factor:.1f}x realtime on "
            f"{transcript.workers} worker(s); {len(transcript.cues)} subtitles"
            + (f"; {unsure} words Whisper was unsure of (marked)" if unsure else "")
        )

    def _write(self, job: PageJob, outcome: FileOutcome, transcript: Transcript, options: JobOptions | None = None):
        """A file's subtitles in every format asked for, and its player's track, from `transcript` (`options`:
        the job's, else its request's checked again)."""
        options = options or self.service.check(JobRequest(**job.record.request))
        written = self.service.write(transcript, job.folder, outcome.stem, options)
        outcome.outputs = {fmt: path.name for fmt, path in written.items()}
        # WebVTT of our own for the player: Gradio would otherwise convert an SRT into a file of its own,
        # outside the job's folder (and its conversion garbles the times). Named anew after each edit, so
        # that no browser keeps showing the track it had.
        if outcome.player:
            (job.folder / outcome.player).unlink(missing_ok=True)
        name = f"{outcome.stem}.player{f'.{outcome.edits}' if outcome.edits else ''}.vtt"
        outcome.player = write(transcript, job.folder / name, "vtt", options.word_highlight).name
        for name in outcome.muxed.values():  # made from the subtitles before: made again when asked
            (job.folder / name).unlink(missing_ok=True)
        outcome.muxed = {}

    # A person's work on a finished file

    def save_edits(self, job: PageJob, index: int, edits: list[EditedCue]) -> Transcript:
        """Save a person's cues for file `index`: checked (UserError, nothing saved, where they cannot be),
        then every format and the player's track written from them. The edited transcript."""
        outcome = job.record.files[index]
        machine = read_json((job.folder / outcome.transcript).read_text(encoding="utf-8"))
        check_edits(edits, machine.duration)
        edited = apply_edits(machine, edits)
        outcome.edits += 1
        outcome.edited = write(edited, job.folder / f"{outcome.stem}.edited.json", "json").name
        self._write(job, outcome, edited)
        job.record.save(job.folder)
        job.update()
        return edited

    def revert(self, job: PageJob, index: int) -> Transcript:
        """Go back to the machine's cues for file `index`; its transcript."""
        outcome = job.record.files[index]
        machine = read_json((job.folder / outcome.transcript).read_text(encoding="utf-8"))
        if outcome.edited:
            (job.folder / outcome.edited).unlink(missing_ok=True)
        outcome.edited, outcome.edits = "", outcome.edits + 1
        self._write(job, outcome, machine)
        job.record.save(job.folder)
        job.update()
        return machine

    def mux(self, job: PageJob, index: int) -> list[str]:
        """The video of file `index` with its subtitles as a track, as MKV and MP4; what could not be made,
        in words (a video whose codecs MP4 cannot hold, say)."""
        outcome = job.record.files[index]
        transcript = job.transcript(index)
        refused = []
        for container in CONTAINERS:
            target = job.folder / f"{outcome.stem}.subtitled.{container}"
            try:
                outcome.muxed[container] = with_subtitles(job.folder / outcome.source, transcript, target).name
            except MuxError as error:
                refused.append(messages.as_sentence(str(error)))
        job.record.save(job.folder)
        job.update()
        return refused

    def _end(self, job: PageJob, failure: str = "") -> None:
        """Close the job: what became of it in words, a batch's zip; its state last, since pages stop
        following a job once it has ended."""
        record = job.record
        states = [outcome.state for outcome in record.files]
        for outcome in record.files:
            if outcome.state in (WAITING, RUNNING):
                outcome.state = CANCELLED if job.cancel.is_set() else FAILED
        if len(record.files) > 1 and DONE in states:
            record.archive = self._archive(job)
        state, message = self._outcome(job, states, failure)
        record.message = message
        record.state = state
        record.save(job.folder)
        job.update(progress=None)
        if not record.owner and state != DONE:  # a script's job that did not end well: nobody asks again
            self.forget(job)

    @staticmethod
    def _outcome(job: PageJob, states: list[str], failure: str) -> tuple[str, str]:
        """The whole job's state and message, from its files' states."""
        if failure:
            return FAILED, failure
        if INTERRUPTED in states:
            return INTERRUPTED, messages.as_sentence(messages.INTERRUPTED)
        if job.cancel.is_set():
            return CANCELLED, "Cancelled."
        return next((state for state in (DONE, NO_SPEECH) if state in states), FAILED), ""

    @staticmethod
    def _archive(job: PageJob) -> str:
        """A batch's subtitles in one zip named after the batch ("talk and 4 more.zip")."""
        files = job.record.files
        name = f"{Path(files[0].name).stem} and {len(files) - 1} more.zip"
        with zipfile.ZipFile(job.folder / name, "w", zipfile.ZIP_DEFLATED) as bundle:
            for outcome in job.record.files:
                for output in outcome.outputs.values():
                    bundle.write(job.folder / output, output)
        return name

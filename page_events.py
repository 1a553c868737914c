"""The page's events: starting a job from the form, following it until it ends (also after a reload, by its
address), cancelling it, running it again, and the scripting API's transcribe (gradio_client).

Each handler gives the page's outputs by name (`RESULTS`); `page.py` lays the components out and wires
them to these handlers. Refusals and failures are shown in the page's status box, where they stay until
the next action; only the scripting API raises them, as gr.Error, for its callers' code to catch.
"""

import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

import messages
from editing import parse_edits
from jobs import JobRequest, JobService
from page_jobs import PageJob, PageJobs
from page_views import (
    cleared,
    job_view,
    message_html,
    outputs,
    progress_html,
    recent_html,
    replace_status,
    script_view,
    single_view,
)
from results import (
    DONE,
    distinct_names,
    new_job_folder,
    remove_old,
)
from uploads import UploadDesk

FOLLOW_EVERY_S = 1.0  # a running job's view is refreshed at least this often (the time left moves)


@dataclass(frozen=True)
class PageForm:
    """What the page's form holds when Transcribe is pressed."""

    tab: str  # the input chosen: "file", "record", "link" or "several"
    upload: str | None
    recording: str | None
    link: str
    files: list[str]  # several files, and a folder's audio and video files, as one batch
    model: str
    language: str
    task: str
    formats: list[str]
    all_workers: bool
    several_languages: bool
    word_highlight: bool
    vad_threshold: float
    initial_prompt: str
    hotwords: str
    line_chars: float
    chinese_script: str

    def request(self) -> JobRequest:
        """The job the form asks for, before it is checked."""
        return JobRequest(
            model=self.model,
            language=self.language,
            task=self.task,
            initial_prompt=self.initial_prompt or "",
            hotwords=self.hotwords or "",
            multilingual=bool(self.several_languages),
            vad_threshold=self.vad_threshold,
            max_line_chars=self.line_chars,
            chinese_script=self.chinese_script,
            formats=tuple(self.formats or ("srt",)),
            word_highlight=bool(self.word_highlight),
            all_workers=bool(self.all_workers),
        )


class PageEvents:
    """The page's handlers, over the job layer."""

    def __init__(self, service: JobService, jobs: PageJobs, uploads: UploadDesk, results_dir: Path, keep_hours: float):
        self.service = service
        self.jobs = jobs
        self.uploads = uploads
        self.results_dir = results_dir
        self.keep_hours = keep_hours

    # Who is asking

    @staticmethod
    def owner_of(browser: str | None) -> str:
        """The browser's id as the page keeps it, or a new one for a browser that has none yet."""
        return browser if isinstance(browser, str) and len(browser) == 32 else secrets.token_hex(16)

    # Events

    def load(self, browser: str | None, request: gr.Request) -> Iterator[tuple]:
        """The page opened: give a new browser its id, list its recent jobs, and where the address names a
        job of this browser, show it (following it while it runs)."""
        owner = self.owner_of(browser)
        recent = recent_html(self.jobs.recent(owner, request.username))
        job_id = request.query_params.get("job", "")
        if not job_id:
            yield owner, recent, *outputs()
            return
        job = self.jobs.find(job_id, owner, request.username)
        if job is None:
            yield (
                owner,
                recent,
                *outputs(status=message_html(messages.as_sentence(messages.NO_SUCH_JOB), "error"), job=""),
            )
            return
        yield from self.following(job, owner, request.username)

    def transcribe(self, form: PageForm, browser: str | None, request: gr.Request) -> Iterator[tuple]:
        """Start a job from the form and follow it; a refusal is shown in the status box."""
        owner = self.owner_of(browser)
        try:
            job = self.start(form, owner, request)
        except messages.UserError as error:
            yield owner, gr.skip(), *cleared(message_html(error.sentence, "error"))
            return
        yield owner, gr.skip(), *cleared(progress_html(job), job.record.id)
        yield from self.following(job, owner, request.username)

    def cancel(self, job_id: str, browser: str | None, request: gr.Request) -> None:
        """Cancel the job the page shows, if it is this browser's."""
        job = self.jobs.find(job_id or "", self.owner_of(browser), request.username)
        if job is not None:
            job.cancel.set()

    def run_again(self, job_id: str, browser: str | None, request: gr.Request) -> Iterator[tuple]:
        """An ended job (interrupted, failed, cancelled) started over with the same files."""
        owner = self.owner_of(browser)
        job = self.jobs.find(job_id or "", owner, request.username)
        if job is None or not job.ended:
            yield owner, gr.skip(), *outputs(status=message_html(messages.as_sentence(messages.NO_SUCH_JOB), "error"))
            return
        try:
            options = self.service.check(JobRequest(**job.record.request))
        except messages.UserError as error:  # the model is no longer served, say
            yield owner, gr.skip(), *outputs(status=message_html(error.sentence, "error"))
            return
        yield from self.following(self.jobs.run_again(job, options), owner, request.username)

    def transcribe_for_script(self, form: PageForm, request: gr.Request) -> Iterator[tuple]:
        """The scripting API (gradio_client's `/transcribe`): (summary, text, files, cues, job id), also while
        it runs. A refusal or a failure raises gr.Error; a script that stops listening stops its job."""
        try:
            job = self.start(form, "", request)
        except messages.UserError as error:
            raise gr.Error(error.sentence) from None
        try:
            for _ in self.follow(job):
                yield script_view(job)
        finally:
            if not job.ended:  # the script went away: nobody can fetch this job's result any more
                job.cancel.set()
        record = job.record
        if record.state != DONE:
            raise gr.Error(
                record.message or "\n".join(f"{outcome.name}: {outcome.message}" for outcome in record.files)
            )
        yield script_view(job)

    # A person's work on a finished file

    def save_edits(self, job_id: str, browser: str | None, edits: object, request: gr.Request) -> tuple:
        """Save the editor's cues: every format and the player's track written from them; or, where they
        cannot be saved, why (and the editor keeps them, unsaved)."""
        job = self.jobs.find(job_id or "", self.owner_of(browser), request.username)
        if job is None or not job.ended:
            return outputs(status=message_html(messages.as_sentence(messages.NO_SUCH_JOB), "error"))
        try:
            edited = self.jobs.save_edits(job, 0, parse_edits(edits))
        except messages.UserError as error:
            return outputs(status=message_html(f"{error.sentence} Nothing was saved.", "error"))
        formats = ", ".join(fmt.upper() for fmt in job.record.files[0].outputs)
        return replace_status(single_view(job), f"Saved: {len(edited.cues)} subtitles, in {formats} and the player.")

    def revert(self, job_id: str, browser: str | None, request: gr.Request) -> tuple:
        """Back to the machine's cues."""
        job = self.jobs.find(job_id or "", self.owner_of(browser), request.username)
        if job is None or not job.ended:
            return outputs(status=message_html(messages.as_sentence(messages.NO_SUCH_JOB), "error"))
        self.jobs.revert(job, 0)
        return replace_status(single_view(job), "Back to the machine's subtitles: your edits are gone.")

    def mux(self, job_id: str, browser: str | None, request: gr.Request) -> tuple:
        """The video with its subtitles as a track (MKV and MP4), to download."""
        job = self.jobs.find(job_id or "", self.owner_of(browser), request.username)
        if job is None or not job.ended:
            return outputs(status=message_html(messages.as_sentence(messages.NO_SUCH_JOB), "error"))
        refused = self.jobs.mux(job, 0)
        said = " ".join(refused) or "The video with its subtitles as a track, language tagged: download it below."
        return replace_status(single_view(job), said)

    def save_for_script(self, job_id: str, cues: object, request: gr.Request) -> tuple[str, list[str]]:
        """The scripting API's `/save_cues`: a finished job's file (`"file"` in the cues names which, for a
        batch) given edited cues; (what was saved, the subtitle files). gr.Error where it cannot be."""
        job = self.jobs.find(job_id or "", "", request.username)
        if job is None or not job.ended:
            raise gr.Error(messages.as_sentence(messages.NO_SUCH_JOB))
        names = [outcome.name for outcome in job.record.files]
        named = cues[0].get("file") if isinstance(cues, list) and cues and isinstance(cues[0], dict) else None
        index = names.index(named) if named in names else 0
        try:
            edited = self.jobs.save_edits(job, index, parse_edits(cues))
        except messages.UserError as error:
            raise gr.Error(error.sentence) from None
        outcome = job.record.files[index]
        return f"{outcome.name}: {len(edited.cues)} subtitles saved", [
            str(job.folder / name) for name in outcome.outputs.values()
        ]

    # Starting a job

    def start(self, form: PageForm, owner: str, request: gr.Request) -> PageJob:
        """A new job of the form's input, in a folder of its own, running; UserError where it cannot be."""
        if self.service.counter.draining:
            raise messages.UserError(messages.SERVER_DRAINING, status=503)
        options = self.service.check(form.request())
        remove_old(self.results_dir, self.keep_hours)
        link = form.link.strip() if form.tab == "link" else ""
        if form.tab == "link" and not link:
            raise messages.UserError(messages.NOTHING_CHOSEN, param="link")
        folder = new_job_folder(self.results_dir)
        try:
            inputs = [] if link else self.take_inputs(form, folder, request.session_hash)
            return self.jobs.start(folder, inputs, form.request(), options, owner, request.username, link)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def take_inputs(self, form: PageForm, folder: Path, session: str) -> list[tuple[Path, str, str]]:
        """The job's files in its folder: (path, the name the user knows, its subtitles' stem)."""
        chosen = {"file": [form.upload], "record": [form.recording], "several": form.files}.get(form.tab, [])
        chosen = [path for path in chosen if path]
        if not chosen:
            raise messages.UserError(messages.NOTHING_CHOSEN, param="file")
        names = distinct_names([Path(path).name for path in chosen])
        taken = []
        for path, (name, stem) in zip(chosen, names):
            taken.append((self.uploads.take(path, session, folder / name), Path(path).name, stem))
        return taken

    # Views

    def following(self, job: PageJob, owner: str, user: str | None) -> Iterator[tuple]:
        """The page's outputs (the browser's id, its recent jobs, the job's view) while `job` runs, and once
        it has ended."""
        recent = recent_html(self.jobs.recent(owner, user))
        for view in self.follow(job):
            yield owner, recent_html(self.jobs.recent(owner, user)) if job.ended else recent, *view
            recent = gr.skip()

    def follow(self, job: PageJob, every_s: float = FOLLOW_EVERY_S) -> Iterator[tuple]:
        """The job's view now, and again at each change (and every `every_s`) until it has ended."""
        version, shown_cues = -1, None
        while True:
            job.watched_at = time.monotonic()
            ended = job.ended
            cues = None if job.cues is shown_cues else job.cues
            shown_cues = job.cues
            yield job_view(job, cues)
            if ended:
                return
            version = job.wait_for_change(version, every_s)

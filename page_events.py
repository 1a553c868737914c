"""The page's events: starting a job from the form, following it until it ends (also after a reload, by its
address), cancelling it, running it again, and the scripting API's transcribe (gradio_client).

Each handler gives the page's outputs by name (`RESULTS`); `page.py` lays the components out and wires
them to these handlers. Refusals and failures are shown in the page's status box, where they stay until
the next action; only the scripting API raises them, as gr.Error, for its callers' code to catch.
"""

import html
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

import messages
from jobs import JobRequest, JobService
from page_jobs import PageJob, PageJobs
from results import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    NO_SPEECH,
    RUNNING,
    WAITING,
    distinct_names,
    new_job_folder,
    remove_old,
)
from uploads import UploadDesk
from writers import FORMATS, plain_text

# The outputs a job's view sets, by name, in the order `page.py` lists their components.
RESULTS = (
    "status",
    "job",
    "video",
    "audio",
    *(f"download_{fmt}" for fmt in FORMATS),
    "archive",
    "batch_files",
    "cues",
    "text",
    "cancel",
    "again",
)
FOLLOW_EVERY_S = 1.0  # a running job's view is refreshed at least this often (the time left moves)
API_WATCH_S = 30.0  # a script's job that nobody has followed for this long is cancelled


def outputs(**updates) -> tuple:
    """The page's outputs in RESULTS order: those named, and gr.skip() (left as they are) for the rest."""
    return tuple(updates.get(name, gr.skip()) for name in RESULTS)


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
        recent = self.recent_html(owner, request.username)
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
            yield owner, gr.skip(), *self.cleared(message_html(error.sentence, "error"))
            return
        yield owner, gr.skip(), *self.cleared(progress_html(job), job.record.id)
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
            for _ in self.follow(job, every_s=min(FOLLOW_EVERY_S, API_WATCH_S / 3)):
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
        recent = self.recent_html(owner, user)
        for view in self.follow(job):
            yield owner, self.recent_html(owner, user) if job.ended else recent, *view
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

    @staticmethod
    def cleared(status: str, job_id: str = "") -> tuple:
        """A view with nothing of an earlier job in it, `status` in the status box, and the job's id."""
        return outputs(
            status=status,
            job=job_id,
            video=gr.Video(value=None, visible="hidden"),
            audio=gr.Audio(value=None, visible="hidden"),
            **{f"download_{fmt}": gr.DownloadButton(visible=False) for fmt in FORMATS},
            archive=gr.DownloadButton(visible=False),
            batch_files=gr.File(value=None, visible=False),
            cues=gr.Dataframe(value=None, visible="hidden"),
            text=text_box(""),
            cancel=gr.Button(visible=False),
            again=gr.Button(visible=False),
        )

    def recent_html(self, owner: str, user: str | None) -> str:
        """This browser's recent jobs as links to their addresses."""
        records = self.jobs.recent(owner, user)
        if not records:
            return ""
        items = "".join(
            f'<li><a href="?job={record.id}">{html.escape(record.title)}</a> '
            f'<span class="when">{ago(record.created)}</span> <span class="state {record.state.replace(" ", "-")}">'
            f"{record.state}</span></li>"
            for record in records
        )
        return f'<details class="recent" open><summary>Recent jobs in this browser</summary><ul>{items}</ul></details>'


def job_view(job: PageJob, cues) -> tuple:
    """The page's outputs for `job` as it is now; `cues` None where they have not changed since last shown."""
    record = job.record
    if not job.ended:
        live = {}
        if cues is not None:
            live = {
                "cues": gr.Dataframe(value=cue_rows(cues), visible=True if cues else "hidden"),
                "text": text_box(plain_text(cues)),
            }
        return outputs(
            status=progress_html(job),
            job=record.id,
            cancel=gr.Button(visible=True),
            again=gr.Button(visible=False),
            **live,
        )
    if len(record.files) == 1:
        return single_view(job)
    return batch_view(job)


def single_view(job: PageJob) -> tuple:
    """An ended job of one file: its player, downloads, cue table and text; or what stopped it."""
    outcome = job.record.files[0]
    transcript = job.transcript(0)
    cues = transcript.cues if transcript is not None else (job.cues if outcome.state == CANCELLED else [])
    status = (
        summary_html(outcome.message)
        if outcome.state == DONE
        else message_html(job.record.message or outcome.message, kind_of(outcome.state))
    )
    source = str(job.folder / outcome.source)
    track = str(job.folder / outcome.player) if outcome.player else None
    played = outcome.state == DONE
    return outputs(
        status=status,
        job=job.record.id,
        video=gr.Video(value=source, subtitles=track, visible=True)
        if played and outcome.picture
        else gr.Video(value=None, visible="hidden"),
        audio=gr.Audio(value=source, subtitles=track, visible=True)
        if played and not outcome.picture
        else gr.Audio(value=None, visible="hidden"),
        **{
            f"download_{fmt}": gr.DownloadButton(
                f"Download {fmt.upper()}", value=str(job.folder / outcome.outputs[fmt]), visible=True
            )
            if fmt in outcome.outputs
            else gr.DownloadButton(visible=False)
            for fmt in FORMATS
        },
        archive=gr.DownloadButton(visible=False),
        batch_files=gr.File(value=None, visible=False),
        cues=gr.Dataframe(value=cue_rows(cues), visible=True if cues else "hidden"),
        text=text_box(plain_text(cues)),
        cancel=gr.Button(visible=False),
        again=gr.Button(visible=job.record.state in (INTERRUPTED, FAILED, CANCELLED)),
    )


def batch_view(job: PageJob) -> tuple:
    """An ended batch: each file's line, its zip and each file's subtitles; the text of each file."""
    record = job.record
    done = [outcome for outcome in record.files if outcome.state == DONE]
    written = [str(job.folder / name) for outcome in done for name in outcome.outputs.values()]
    texts = []
    for index, outcome in enumerate(record.files):
        transcript = job.transcript(index) if outcome.state == DONE else None
        if transcript is not None:
            texts.append(f"== {outcome.name} ==\n" + plain_text(transcript.cues))
    title = f"{len(done)} of {len(record.files)} files transcribed"
    status = batch_html(title, record) if not record.message else message_html(record.message, kind_of(record.state))
    return outputs(
        status=status,
        job=record.id,
        video=gr.Video(value=None, visible="hidden"),
        audio=gr.Audio(value=None, visible="hidden"),
        **{f"download_{fmt}": gr.DownloadButton(visible=False) for fmt in FORMATS},
        archive=gr.DownloadButton(
            f"Download all ({record.archive})", value=str(job.folder / record.archive), visible=True
        )
        if record.archive
        else gr.DownloadButton(visible=False),
        batch_files=gr.File(value=written, visible=True) if written else gr.File(value=None, visible=False),
        cues=gr.Dataframe(value=None, visible="hidden"),
        text=text_box("\n\n".join(texts)),
        cancel=gr.Button(visible=False),
        again=gr.Button(visible=record.state in (INTERRUPTED, FAILED, CANCELLED)),
    )


def script_view(job: PageJob) -> tuple:
    """The scripting API's outputs: (summary, text, the subtitle files, the cues, the job's id)."""
    record = job.record
    files, texts, cues = [], [], []
    for index, outcome in enumerate(record.files):
        files += [str(job.folder / name) for name in outcome.outputs.values()]
        transcript = job.transcript(index) if outcome.state == DONE else None
        shown = transcript.cues if transcript is not None else (job.cues if index == job.current else [])
        texts.append(plain_text(shown))
        cues += [{"file": outcome.name, "start": cue.start, "end": cue.end, "text": cue.text} for cue in shown]
    if record.archive:
        files.append(str(job.folder / record.archive))
    summary = "\n".join(f"{outcome.name}: {outcome.message or outcome.state}" for outcome in record.files)
    return summary, "\n\n".join(text for text in texts if text), files or None, cues, record.id


def text_box(text: str) -> gr.Textbox:
    """The text box's update: shown only where there is text."""
    return gr.Textbox(value=text, visible=True if text else "hidden")


def cue_rows(cues) -> list[list[str]]:
    """The cue table: start, end and the lines as they will be shown."""
    return [[clock(cue.start), clock(cue.end), cue.text] for cue in cues]


def clock(seconds: float) -> str:
    """A time as the cue table shows it, to a tenth of a second (narrow enough for a phone): 01:02.5,
    or 1:02:03.5 from an hour on."""
    minutes, tenths = divmod(round(seconds * 10), 600)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}:" if hours else "") + f"{minutes:02d}:{tenths // 10:02d}.{tenths % 10}"


def ago(moment: float) -> str:
    """How long ago `moment` (time.time()) was, as a person says it."""
    seconds = max(time.time() - moment, 0)
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} days ago"


def kind_of(state: str) -> str:
    """The status box's kind of message for a job or file in `state`."""
    return {CANCELLED: "cancelled", NO_SPEECH: "note", INTERRUPTED: "note", DONE: "done"}.get(state, "error")


def message_html(text: str, kind: str = "error") -> str:
    """A message that stays in the status box until the next action."""
    return f'<div class="message {kind}" role="status">{html.escape(text)}</div>'


def summary_html(text: str) -> str:
    """A finished job's summary in the status box."""
    return f'<div class="message done" role="status">{html.escape(text)}.</div>'


def batch_html(title: str, record) -> str:
    """An ended batch in the status box: its title, and a line per file."""
    lines = "".join(
        f'<li class="{kind_of(outcome.state)}">{html.escape(outcome.name)}: '
        f"{html.escape(outcome.message or outcome.state)}</li>"
        for outcome in record.files
    )
    return f'<div class="message batch" role="status"><strong>{html.escape(title)}</strong><ul>{lines}</ul></div>'


def progress_html(job: PageJob) -> str:
    """The progress of a running job: which file, a bar that only moves forward, and what happens now."""
    record, progress = job.record, job.progress
    files = record.files
    title = html.escape(files[job.current].name)
    if len(files) > 1:
        title = f"File {job.current + 1} of {len(files)} ({title})"
    if job.downloading:
        doing, fraction = "Downloading the link", 0.0
    elif job.waiting:
        doing, fraction = "Waiting for a free worker", 0.0
    elif progress is None:
        doing, fraction = "Starting", 0.0
    elif not progress.transcribing:
        of = f" of {progress.duration_s:.0f}" if progress.duration_s else ""
        doing, fraction = f"Decoding and finding speech: {progress.decoded_s:.0f}{of} s read", progress.fraction
    else:
        states = ", ".join(f"{name} {'busy' if name in progress.busy else 'idle'}" for name in progress.workers)
        left = f" · about {progress.left_s:.0f} s left" if progress.left_s else ""
        doing, fraction = f"Transcribing: {states}{left}", progress.fraction
    ended = "".join(
        f'<li class="{kind_of(outcome.state)}">{html.escape(outcome.name)}: {html.escape(outcome.message)}</li>'
        for outcome in files
        if outcome.state not in (WAITING, RUNNING)
    )
    percent = round(100 * fraction)
    return (
        f'<div class="progress" role="progressbar" aria-valuenow="{percent}" aria-valuemin="0" aria-valuemax="100">'
        f'<div class="progress-title">{title}</div><div class="progress-track"><div class="progress-bar" '
        f'style="width: {percent}%"></div></div><div class="progress-text">{percent} % · {html.escape(doing)}</div>'
        f"{f'<ul>{ended}</ul>' if ended else ''}</div>"
    )

"""What the page shows of a job: its outputs by name (RESULTS), as it runs and once it has ended, rendered
from the job's record and transcript; and the status box's messages. Pure functions of the job: the events
(`page_events.py`) choose which view to send.
"""

import html
import time

import gradio as gr

from datatypes import UNSURE_PROBABILITY
from editing import clock, rule_breaks
from page_jobs import PageJob
from pipeline import cue_options_for
from results import CANCELLED, DONE, FAILED, INTERRUPTED, NO_SPEECH, RUNNING, WAITING, JobRecord
from writers import FORMATS, plain_text, words_by_line

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
    "save",
    "revert",
    "mux",
    "download_mkv",
    "download_mp4",
    "text",
    "cancel",
    "again",
)
# What each container's download of the video with its subtitles is called.
MUXED_LABELS = {"mkv": "Video with subtitles (MKV)", "mp4": "Video with subtitles (MP4)"}


def outputs(**updates) -> tuple:
    """The page's outputs in RESULTS order: those named, and gr.skip() (left as they are) for the rest."""
    return tuple(updates.get(name, gr.skip()) for name in RESULTS)


def replace_status(view: tuple, said: str, kind: str = "done") -> tuple:
    """`view` with `said` in its status box instead."""
    position = RESULTS.index("status")
    return (*view[:position], message_html(said, kind), *view[position + 1 :])


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
        cues=editor([]),
        **finishing(None),
        text=text_box(""),
        cancel=gr.Button(visible=False),
        again=gr.Button(visible=False),
    )


def finishing(outcome, folder=None) -> dict:
    """The buttons for a person's work on a finished file (in `folder`): Save edits, Revert, the video with
    its subtitles and its downloads; all hidden where `outcome` is no finished file."""
    done = outcome is not None and outcome.state == DONE
    muxed = {container: folder / name for container, name in outcome.muxed.items()} if done else {}
    return {
        "save": gr.Button(visible=done),
        "revert": gr.Button(visible=done and bool(outcome.edited)),
        "mux": gr.Button(visible=done and outcome.picture),
        **{
            f"download_{container}": gr.DownloadButton(label, value=str(muxed[container]), visible=True)
            if container in muxed
            else gr.DownloadButton(visible=False)
            for container, label in MUXED_LABELS.items()
        },
    }


def recent_html(records: list[JobRecord]) -> str:
    """A browser's recent jobs as links to their addresses."""
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
            live = {"cues": editor(cues), "text": text_box(plain_text(cues))}
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
        cues=editor(cues, transcript.language if transcript else "en", editable=played),
        **finishing(outcome, job.folder),
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
        cues=editor([]),
        **finishing(None),
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


def editor(cues, language: str = "en", editable: bool = False) -> gr.HTML:
    """The cue editor's update: each cue's times and lines (editable once the job has ended), the words
    Whisper was unsure of marked, and what breaks the subtitle rules flagged."""
    if not cues:
        return gr.HTML("", visible="hidden")
    options = cue_options_for(language)
    unsure = sum(word.probability < UNSURE_PROBABILITY for cue in cues for word in cue.words)
    rows = "".join(_cue_row(number, cue, options, editable) for number, cue in enumerate(cues, 1))
    note = f" · {unsure} words Whisper was unsure of, marked" if unsure else ""
    hint = " · click a cue to play it; edit, then Save" if editable else ""
    head = f'<div class="cue-head">{len(cues)} subtitles{note}{hint}</div>'
    return gr.HTML(f'{head}<div class="cue-list" data-editable="{int(editable)}">{rows}</div>', visible=True)


def _cue_row(number: int, cue, options, editable: bool) -> str:
    flags = rule_breaks(cue, options)
    play = f'<button data-do="play" title="Play cue {number}" aria-label="Play cue {number}">▶</button>'
    if editable:
        times = (
            f'{play}<input class="start" value="{clock(cue.start)}" aria-label="Start of cue {number}"> – '
            f'<input class="end" value="{clock(cue.end)}" aria-label="End of cue {number}">'
        )
        tools = "".join(
            f'<button data-do="{action}" title="{title}">{label}</button>'
            for action, label, title in (
                ("split", "Split", "Split the cue where the cursor is"),
                ("merge", "Merge", "Merge with the next cue"),
                ("insert", "Insert", "Insert an empty cue after this one"),
                ("delete", "Delete", "Delete the cue"),
            )
        )
    else:
        times = f'{play}<span class="start">{clock(cue.start)}</span> – <span class="end">{clock(cue.end)}</span>'
        tools = ""
    flagged = f'<div class="flags">{html.escape("; ".join(flags))}</div>' if flags else ""
    return (
        f'<div class="cue{" flagged" if flags else ""}" data-start="{cue.start}" data-end="{cue.end}">'
        f'<div class="times">{times}</div><div class="text" contenteditable="{str(editable).lower()}">'
        f'{_marked_lines(cue)}</div>{flagged}<div class="tools">{tools}</div></div>'
    )


def _marked_lines(cue) -> str:
    """The cue's lines, each word Whisper was unsure of in a <mark>."""
    lines = words_by_line(cue)
    if lines is None:
        return "<br>".join(html.escape(line) for line in cue.lines)
    return "<br>".join("".join(_marked(text, word) for text, word in line) for line in lines)


def _marked(text: str, word) -> str:
    if word.probability >= UNSURE_PROBABILITY:
        return html.escape(text)
    return f'<mark class="unsure" title="Whisper was unsure of it ({word.probability:.0%})">{html.escape(text)}</mark>'

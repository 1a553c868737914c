"""Command line: python cli.py INPUT [INPUT ...] -o OUTPUT [options], or python cli.py --watch FOLDER

Exit codes: 0 success, 2 a user error (bad file, bad option, unknown model), 1 an internal error.
"""

import argparse
import logging
import queue
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import messages
from audio import AudioError, check_media
from cleanup import CHINESE_SCRIPTS, DEFAULT_CHINESE_SCRIPT
from jobs import JobOptions, JobRequest, JobService, check_request
from links import AddressPolicy, fetch_media, is_link
from models import ModelError
from pipeline import Progress
from settings import CLI, Config, add_arguments, config_from
from startup import configure_logging, model_spec, start_pool, unwind_on_sigterm
from watch import watch_folder
from writers import FORMATS

USER_ERROR, INTERNAL_ERROR = 2, 1

EXAMPLES = """examples:
  python cli.py talk.mp4 -o talk.srt                  one file
  python cli.py https://example.org/talk.mp3          a link: a media file, or a video page yt-dlp knows
  python cli.py *.mp3 -o subs/ --format vtt           several files into a folder
  python cli.py *.wav -o subs/ --jobs 4                four files at once on the workers
  python cli.py lecture.mkv --devices cuda:0,cuda:1   two GPUs
  python cli.py meeting.m4a --devices 'cpu*2'         two CPU workers
  python cli.py film.mkv --ray-address 10.0.0.5:6379  every GPU of a Ray cluster
  python cli.py interview.wav --language de           German, not detected
  python cli.py song.mp3 -o song.ass --word-highlight  karaoke: each word lit as it is sung
  python cli.py --watch /media/films                  subtitles for a library, now and as files appear
  python cli.py --download-only --model large-v3      fetch a model into the cache, then exit

Every setting also has an environment variable (WHISPER_MODEL, WHISPER_DEVICES, ...: see the README).
exit codes: 0 done, 2 a user error (a bad or missing file, a bad option), 1 an internal error"""


def build_parser() -> argparse.ArgumentParser:
    """The command line's flags: the settings' (settings.py), then each job's."""
    parser = argparse.ArgumentParser(
        description="Transcribe audio or video files to subtitles.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="audio or video files, or http(s) links to media files or video pages",
    )
    add_arguments(parser, CLI)
    parser.add_argument(
        "--jobs",
        type=int,
        help="files transcribed at once on the workers (default: as many as there are workers, at least 2)",
    )
    parser.add_argument("-o", "--output", help="output file (one input) or folder (default: beside each input)")
    parser.add_argument("-f", "--format", choices=FORMATS, help="default: from OUTPUT's extension, else srt")
    parser.add_argument("--language", default="auto", help="language code, or auto to detect it")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument("--initial-prompt", default="")
    parser.add_argument("--hotwords", default="")
    parser.add_argument("--max-line-chars", type=int, help="characters per subtitle line (default 42, 16 for CJK)")
    parser.add_argument(
        "--word-highlight",
        action="store_true",
        help="karaoke style: ASS and WebVTT light up each word as it is spoken (SRT cannot)",
    )
    parser.add_argument(
        "--chinese-script",
        choices=list(CHINESE_SCRIPTS),
        default=DEFAULT_CHINESE_SCRIPT,
        help="script for Chinese subtitles",
    )
    parser.add_argument("--download-only", action="store_true", help="fetch the model into the cache and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    parser.add_argument("--verbose", action="store_true", help="a log line for each work unit too")
    return parser


def output_paths(
    inputs: list[Path], output: str | None, fmt: str | None, beside: list[Path] | None = None, names: list | None = None
) -> list[tuple[Path, str]]:
    """Where each input's subtitles go, and in which format: in OUTPUT, else in the input's `beside`
    folder (by default the input's own folder). `names`: the inputs as the user gave them."""
    if output and len(inputs) == 1 and not Path(output).is_dir():
        suffix = Path(output).suffix.lstrip(".").lower()
        if fmt and suffix in FORMATS and suffix != fmt:
            raise ValueError(
                f"{output} ends in .{suffix} but --format is {fmt}: name the file .{fmt}, or leave out --format"
            )
        chosen = fmt or (suffix if suffix in FORMATS else "srt")
        return [(Path(output), chosen)]
    chosen = fmt or "srt"
    folder = Path(output) if output else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    beside = beside or [source.parent for source in inputs]
    targets = [((folder or near) / f"{source.stem}.{chosen}", chosen) for source, near in zip(inputs, beside)]
    written: dict[Path, object] = {}
    for name, (target, _) in zip(names or inputs, targets):
        if (first := written.setdefault(target.resolve(), name)) is not name:
            raise ValueError(f"{first} and {name} would both write {target}: rename one, or run them separately")
    return targets


def job_request(args: argparse.Namespace, config: Config, fmt: str) -> JobRequest:
    """The job the flags ask for, for every file."""
    return JobRequest(
        language=args.language,
        task=args.task,
        initial_prompt=args.initial_prompt,
        hotwords=args.hotwords,
        multilingual=config.multilingual,
        max_line_chars=args.max_line_chars,
        chinese_script=args.chinese_script,
        formats=(fmt,),
        word_highlight=args.word_highlight,
        batch_size=config.batch_size,
    )


def run(args: argparse.Namespace, config: Config) -> int:
    """What the flags ask for, once they are parsed; the exit code."""
    if len(config.model) > 1:
        raise ValueError("the command line takes one model, not several")
    spec = model_spec(config.model[0] if config.model else None, config.compute_type)
    if args.download_only:
        print(spec.model_path)
        return 0
    if config.watch is not None:
        return watch(args, config, spec)
    if not args.inputs:
        raise ValueError("no input file given")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, not {args.jobs}")
    with tempfile.TemporaryDirectory(prefix="whisper-for-subs-") as downloads:
        # Links are fetched first too, so that a bad one stops the run before any model loads; their
        # subtitles go to the current folder (or OUTPUT), not beside the temporary download.
        policy = AddressPolicy(allow_private=config.allow_private_urls)
        inputs = [
            fetch_media(name, Path(downloads), config.max_file_size, policy) if is_link(name) else Path(name)
            for name in args.inputs
        ]
        for source in inputs:
            check_media(source)
        beside = [Path.cwd() if is_link(name) else source.parent for name, source in zip(args.inputs, inputs)]
        labels = [name if is_link(name) else source for name, source in zip(args.inputs, inputs)]
        targets = output_paths(inputs, args.output, args.format, beside, labels)
        if args.word_highlight and targets[0][1] not in ("ass", "vtt"):
            raise ValueError(
                f"--word-highlight needs ASS or WebVTT, not {targets[0][1]}: add --format ass or --format vtt"
            )
        # Checked before any model is loaded.
        options = check_request(job_request(args, config, targets[0][1]), {spec.name: spec}, config.batch_size)
        with start_pool(spec, config.devices, config.ray_address) as pool:
            jobs = min(args.jobs or max(2, len(pool.devices)), len(inputs))
            service = JobService({spec.name: pool}, config.batch_size, running=jobs)
            failures = transcribe_all(service, options, list(zip(inputs, labels, targets)), jobs, args.quiet)
    return USER_ERROR if failures else 0


def watch(args: argparse.Namespace, config: Config, spec) -> int:
    """`--watch FOLDER`: subtitles for a media library, now and as files appear, until stopped."""
    if args.inputs:
        raise ValueError("--watch takes a folder, not input files: give one or the other")
    request = replace(job_request(args, config, config.watch_formats[0]), formats=config.watch_formats)
    options = check_request(request, {spec.name: spec}, config.batch_size)
    with start_pool(spec, config.devices, config.ray_address) as pool:
        return watch_folder(JobService({spec.name: pool}, config.batch_size), options, config.watch)


def transcribe_all(
    service: JobService, options: JobOptions, files: list[tuple[Path, object, tuple[Path, str]]], jobs: int, quiet: bool
) -> int:
    """Each (source, label, (target, format)), `jobs` at once, each with its bar on a line of its own;
    the number that failed."""
    lines = queue.SimpleQueue()  # a bar's line on the terminal, one per job running
    for line in range(jobs):
        lines.put(line)
    # Log lines are printed above the bars instead of through them (the root logger prints).
    with ThreadPoolExecutor(jobs) as running, logging_redirect_tqdm():
        done = [
            running.submit(_transcribe_one, service, options, source, label, target, lines, quiet)
            for source, label, target in files
        ]
        try:
            return sum(not file.result() for file in done)
        except BaseException:  # Ctrl-C, SIGTERM: the files still running stop now, unfinished
            for file in done:
                file.cancel()
            for pool in service.pools.values():
                pool.shutdown()
            raise


def _transcribe_one(
    service: JobService,
    options: JobOptions,
    source: Path,
    label: object,
    target: tuple[Path, str],
    lines: queue.SimpleQueue,
    quiet: bool,
) -> bool:
    """One file (`label`: as the user named it), its bar on a free line; whether it went well."""
    line = lines.get()
    try:
        with progress_bar(source.name, quiet, line) as show:
            transcript = service.run(source, options, on_progress=show)
    except messages.UserError as error:
        tqdm.write(
            f"error: {source}: {error.message}" if error.param == "file" else f"error: {error.message}", file=sys.stderr
        )
        return False
    finally:
        lines.put(line)
    path, fmt = target
    if not transcript.cues:
        tqdm.write(f"{label}: {messages.NO_SPEECH}; nothing written", file=sys.stderr)
        return True
    service.write(transcript, path.parent, path.stem, options, (fmt,))
    if not quiet:
        tqdm.write(
            f"{label} -> {path} ({len(transcript.cues)} cues, {transcript.realtime_factor:.1f}x realtime)",
            file=sys.stderr,
        )
    return True


class progress_bar:
    """A tqdm bar for one file, on terminal line `line`, as a context that gives the function to show a
    job's Progress with: what happens while nothing is transcribed yet, then the seconds of the file done."""

    def __init__(self, name: str, quiet: bool, line: int = 0):
        self.bar = tqdm(
            total=0,
            unit="s",
            desc=name,
            disable=quiet,
            file=sys.stderr,
            position=line,
            leave=False,
            bar_format="{desc}: decoding and finding speech",
        )

    def __enter__(self):
        self.bar.__enter__()
        return self.show

    def __exit__(self, *exc_info) -> None:
        self.bar.__exit__(*exc_info)

    def show(self, progress: Progress) -> None:
        """Show one Progress of the job."""
        if not progress.transcribing or not progress.duration_s:
            return  # nothing transcribed yet, or no length to count against: the bar says what happens
        self.bar.bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}"
        self.bar.total = round(progress.duration_s, 1)
        self.bar.n = round(progress.fraction * progress.duration_s, 1)
        # tqdm puts ", " before the postfix itself.
        self.bar.set_postfix_str(f"{progress.left_s:.0f} s left" if progress.left_s else "", refresh=False)
        self.bar.refresh()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit code (0, 2 for a user error, 1 for an internal one)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = config_from(args, parser)
    configure_logging(args.quiet, args.verbose)
    unwind_on_sigterm()
    try:
        return run(args, config)
    except messages.UserError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return USER_ERROR
    except (ModelError, ValueError, AudioError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the last resort: one line, not a traceback, for an unexpected failure
        logging.getLogger("whisper_for_subs").exception("internal error")
        print(f"internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())

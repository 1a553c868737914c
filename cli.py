"""Command line: python cli.py INPUT [INPUT ...] -o OUTPUT [options]

Exit codes: 0 success, 2 a user error (bad file, bad option, unknown model), 1 an internal error.
"""

import argparse
import logging
import queue
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from audio import AudioError, check_media
from cleanup import CHINESE_SCRIPTS, DEFAULT_CHINESE_SCRIPT
from datatypes import TranscribeOptions
from dispatcher import JobFailed, Progress
from links import fetch_media, is_link
from models import ModelError, parse_batch_size
from parallel_transcriber import WorkerPool
from pipeline import transcribe_file
from startup import check_task, configure_logging, job_options, model_spec, start_pool, unwind_on_sigterm
from writers import FORMATS, write

USER_ERROR, INTERNAL_ERROR = 2, 1
DOWNLOAD_LIMIT_BYTES = 2 * 1024**3  # a link's file at most, as the web app's default upload limit


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
  python cli.py --download-only --model large-v3      fetch a model into the cache, then exit

exit codes: 0 done, 2 a user error (a bad or missing file, a bad option), 1 an internal error"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Transcribe audio or video files to subtitles.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="audio or video files, or http(s) links to media files or video pages")
    parser.add_argument("--jobs", type=int, help="files transcribed at once on the workers "
                        "(default: as many as there are workers, at least 2)")
    parser.add_argument("-o", "--output", help="output file (one input) or folder (default: beside each input)")
    parser.add_argument("-f", "--format", choices=FORMATS, help="default: from OUTPUT's extension, else srt")
    parser.add_argument("--model", help="size name, Hugging Face repo id or local CTranslate2 folder "
                        "(default: large-v3-turbo with a GPU, else the bundled tiny.en)")
    parser.add_argument("--devices", "--device", default="auto", help="auto, cpu, cpu*2, cuda:0,cuda:1 ...")
    parser.add_argument("--ray-address", help="run the workers as Ray actors on this cluster (host:port, or auto); "
                        "--devices is then auto (every GPU of the cluster), cpu*N or cuda*N")
    parser.add_argument("--compute-type", help="default: float16 on GPU, int8 on CPU")
    parser.add_argument("--language", default="auto", help="language code, or auto to detect it")
    parser.add_argument("--multilingual", action="store_true",
                        help="the recording changes language: detect each part's language (a multilingual model)")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument("--initial-prompt")
    parser.add_argument("--hotwords")
    parser.add_argument("--batch-size", type=parse_batch_size, default=None,
                        help="windows per batched call (default auto: as many as fit each device's free memory)")
    parser.add_argument("--max-line-chars", type=int, help="characters per subtitle line (default 42, 16 for CJK)")
    parser.add_argument("--word-highlight", action="store_true",
                        help="karaoke style: ASS and WebVTT light up each word as it is spoken (SRT cannot)")
    parser.add_argument("--chinese-script", choices=list(CHINESE_SCRIPTS), default=DEFAULT_CHINESE_SCRIPT,
                        help="script for Chinese subtitles")
    parser.add_argument("--download-only", action="store_true", help="fetch the model into the cache and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    parser.add_argument("--verbose", action="store_true", help="a log line for each work unit too")
    return parser


def output_paths(inputs: list[Path], output: str | None, fmt: str | None, beside: list[Path] | None = None,
                 names: list | None = None) -> list[tuple[Path, str]]:
    """Where each input's subtitles go, and in which format: in OUTPUT, else in the input's `beside`
    folder (by default the input's own folder). `names`: the inputs as the user gave them."""
    if output and len(inputs) == 1 and not Path(output).is_dir():
        suffix = Path(output).suffix.lstrip(".").lower()
        if fmt and suffix in FORMATS and suffix != fmt:
            raise ValueError(f"{output} ends in .{suffix} but --format is {fmt}: name the file .{fmt}, or leave out --format")
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


def run(args: argparse.Namespace) -> int:
    spec = model_spec(args.model, args.compute_type)
    if args.download_only:
        print(spec.model_path)
        return 0
    if not args.inputs:
        raise ValueError("no input file given")
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, not {args.jobs}")
    # Checked before any model is loaded.
    options = job_options(spec, args.language, args.task, args.initial_prompt, args.hotwords, args.batch_size,
                          args.multilingual)
    with tempfile.TemporaryDirectory(prefix="whisper-for-subs-") as downloads:
        # Links are fetched first too, so that a bad one stops the run before any model loads; their
        # subtitles go to the current folder (or OUTPUT), not beside the temporary download.
        inputs = [fetch_media(name, Path(downloads), DOWNLOAD_LIMIT_BYTES) if is_link(name) else Path(name)
                  for name in args.inputs]
        for source in inputs:
            check_media(source)
        beside = [Path.cwd() if is_link(name) else source.parent for name, source in zip(args.inputs, inputs)]
        labels = [name if is_link(name) else source for name, source in zip(args.inputs, inputs)]
        targets = output_paths(inputs, args.output, args.format, beside, labels)
        if args.word_highlight and targets[0][1] not in ("ass", "vtt"):
            raise ValueError(f"--word-highlight needs ASS or WebVTT, not {targets[0][1]}: add --format ass or --format vtt")
        with start_pool(spec, args.devices, args.ray_address) as pool:
            check_task(pool, args.task)
            jobs = min(args.jobs or max(2, len(pool.devices)), len(inputs))
            slots = queue.SimpleQueue()  # a bar's line on the terminal, one per job running
            for slot in range(jobs):
                slots.put(slot)
            # Log lines are printed above the bars instead of through them (the root logger prints).
            with ThreadPoolExecutor(jobs) as running, logging_redirect_tqdm():
                files = [running.submit(_transcribe_one, source, label, target, pool, options, args, slots)
                         for source, label, target in zip(inputs, labels, targets)]
                try:
                    failures = sum(not file.result() for file in files)
                except BaseException:  # Ctrl-C, SIGTERM: the files still running stop now, unfinished
                    for file in files:
                        file.cancel()
                    pool.shutdown()
                    raise
    return USER_ERROR if failures else 0


def _transcribe_one(source: Path, label: str | Path, target: tuple[Path, str], pool: WorkerPool,
                    options: TranscribeOptions, args: argparse.Namespace, slots: queue.SimpleQueue) -> bool:
    """One file (`label`: as the user named it), its bar on a free line; whether its subtitles were written."""
    slot = slots.get()
    try:
        transcript = _transcribe_with_bar(source, pool, options, args, slot)
    except (AudioError, JobFailed) as error:
        tqdm.write(f"error: {error}", file=sys.stderr)
        return False
    finally:
        slots.put(slot)
    path, fmt = target
    write(transcript, path, fmt, args.word_highlight)
    if not args.quiet:
        tqdm.write(f"{label} -> {path} ({len(transcript.cues)} cues, {transcript.realtime_factor:.1f}x realtime)",
                   file=sys.stderr)
    return True


def _transcribe_with_bar(source: Path, pool: WorkerPool, options: TranscribeOptions,
                         args: argparse.Namespace, line: int = 0):
    # Until the first batch is back there is no amount of speech to count: the bar says what happens.
    bar = tqdm(total=0, unit="s", desc=source.name, disable=args.quiet, file=sys.stderr, position=line, leave=False,
               bar_format="{desc}: decoding and finding speech")
    with bar:

        def show(progress: Progress) -> None:
            if not progress.expected_s:
                return  # no speech found yet: the bar still says what happens
            bar.bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of speech"
            bar.total = round(progress.expected_s, 1)
            bar.n = round(progress.done_s, 1)
            bar.refresh()

        return transcribe_file(source, pool, options, max_line_chars=args.max_line_chars,
                               chinese_script=args.chinese_script, on_progress=show)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    unwind_on_sigterm()
    try:
        return run(args)
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

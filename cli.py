"""Command line: python cli.py INPUT [INPUT ...] -o OUTPUT [options]

Exit codes: 0 success, 2 a user error (bad file, bad option, unknown model), 1 an internal error.
"""

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from audio import AudioError, check_media
from cleanup import CHINESE_SCRIPTS, DEFAULT_CHINESE_SCRIPT
from datatypes import TranscribeOptions
from dispatcher import JobFailed, Progress
from models import ModelError, parse_batch_size
from parallel_transcriber import WorkerPool
from pipeline import transcribe_file
from startup import check_task, configure_logging, job_options, model_spec, start_pool, unwind_on_sigterm
from writers import FORMATS, write

USER_ERROR, INTERNAL_ERROR = 2, 1


EXAMPLES = """examples:
  python cli.py talk.mp4 -o talk.srt                  one file
  python cli.py *.mp3 -o subs/ --format vtt           several files into a folder
  python cli.py lecture.mkv --devices cuda:0,cuda:1   two GPUs
  python cli.py meeting.m4a --devices 'cpu*2'         two CPU workers
  python cli.py film.mkv --ray-address 10.0.0.5:6379  every GPU of a Ray cluster
  python cli.py interview.wav --language de           German, not detected
  python cli.py --download-only --model large-v3      fetch a model into the cache, then exit

exit codes: 0 done, 2 a user error (a bad or missing file, a bad option), 1 an internal error"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Transcribe audio or video files to subtitles.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="audio or video files")
    parser.add_argument("-o", "--output", help="output file (one input) or folder (default: beside each input)")
    parser.add_argument("-f", "--format", choices=FORMATS, help="default: from OUTPUT's extension, else srt")
    parser.add_argument("--model", help="size name, Hugging Face repo id or local CTranslate2 folder "
                        "(default: large-v3-turbo with a GPU, else the bundled tiny.en)")
    parser.add_argument("--devices", "--device", default="auto", help="auto, cpu, cpu*2, cuda:0,cuda:1 ...")
    parser.add_argument("--ray-address", help="run the workers as Ray actors on this cluster (host:port, or auto); "
                        "--devices is then auto (every GPU of the cluster), cpu*N or cuda*N")
    parser.add_argument("--compute-type", help="default: float16 on GPU, int8 on CPU")
    parser.add_argument("--language", default="auto", help="language code, or auto to detect it")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument("--initial-prompt")
    parser.add_argument("--hotwords")
    parser.add_argument("--batch-size", type=parse_batch_size, default=None,
                        help="windows per batched call (default auto: as many as fit each device's free memory)")
    parser.add_argument("--max-line-chars", type=int, help="characters per subtitle line (default 42, 16 for CJK)")
    parser.add_argument("--chinese-script", choices=list(CHINESE_SCRIPTS), default=DEFAULT_CHINESE_SCRIPT,
                        help="script for Chinese subtitles")
    parser.add_argument("--download-only", action="store_true", help="fetch the model into the cache and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
    parser.add_argument("--verbose", action="store_true", help="a log line for each work unit too")
    return parser


def output_paths(inputs: list[Path], output: str | None, fmt: str | None) -> list[tuple[Path, str]]:
    """Where each input's subtitles go, and in which format."""
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
    return [((folder or source.parent) / f"{source.stem}.{chosen}", chosen) for source in inputs]


def run(args: argparse.Namespace) -> int:
    spec = model_spec(args.model, args.compute_type)
    if args.download_only:
        print(spec.model_path)
        return 0
    if not args.inputs:
        raise ValueError("no input file given")
    inputs = [Path(name) for name in args.inputs]
    for source in inputs:  # before any model is loaded
        check_media(source)
    targets = output_paths(inputs, args.output, args.format)
    # Checked before any model is loaded.
    options = job_options(spec, args.language, args.task, args.initial_prompt, args.hotwords, args.batch_size)
    failures = 0
    with start_pool(spec, args.devices, args.ray_address) as pool:
        check_task(pool, args.task)
        for source, (target, fmt) in zip(inputs, targets):
            try:
                transcript = _transcribe_with_bar(source, pool, options, args)
            except (AudioError, JobFailed) as error:
                print(f"error: {error}", file=sys.stderr)
                failures += 1
                continue
            write(transcript, target, fmt)
            if not args.quiet:
                print(f"{source} -> {target} ({len(transcript.cues)} cues, "
                      f"{transcript.realtime_factor:.1f}x realtime)", file=sys.stderr)
    return USER_ERROR if failures else 0


def _transcribe_with_bar(source: Path, pool: WorkerPool, options: TranscribeOptions,
                         args: argparse.Namespace):
    bar = tqdm(total=0, unit="s", desc=source.name, disable=args.quiet, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of speech")
    # Log lines are printed above the bar instead of through it (the root logger is the one that prints).
    with bar, logging_redirect_tqdm():

        def show(progress: Progress) -> None:
            bar.total = round(progress.total_s, 1)
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

"""End-to-end speed and accuracy against faster-whisper, all measured in one run.

    python bench/bench.py                      # generates a 10-minute file, CPU, the default offline model
    python bench/bench.py talk.flac --reference talk.txt --model large-v3-turbo --devices cuda:0,cuda:1
    python bench/bench.py talk.flac --repeat 6 --model /tmp/turbo --devices cuda:0 --fixed-tokens 100
    python bench/bench.py --devices 'cpu*2' --ray-address 127.0.0.1:6379   # also (e): the same workers as Ray actors
    python bench/bench.py --long-sentences --minutes 5   # sentences longer than the pauses in them
    python bench/bench.py --timing                       # cue timing and hard speech, no speed runs
    python bench/bench.py talk.flac --timing --reference-times talk-utterances.srt

Runs, on the same model and device: (a) faster-whisper's sequential `WhisperModel.transcribe` with its VAD,
(b) its `BatchedInferencePipeline` (batch 16), (c) this project with one worker, (d) with all workers
(when there are several), and with `--ray-address` (e) as many Ray actors on that cluster. Model loading is
outside every timing. The last line is
`RESULT ours_vs_sequential=<x> ours_vs_batched=<y>`: end-to-end speed ratios of ours (the run with all
workers) against (a) and (b).

`--timing` runs none of that: it prints the tables of `timing.py` instead, cue timing against generated
speech of known timing (and against the utterance times of `--reference-times` for AUDIO), and what is
heard in generated hard speech, for ours and faster-whisper's sequential pipeline with its VAD.

`--paced-engine S` runs none of that either: workers that run no model but sleep as long as a GPU
takes for each batch, S seconds a 30-s window in batches of 32 (the H100's 0.0474 s for large-v3-turbo)
and more a window in smaller ones (`paced_batch_seconds`), through the same decoding, VAD, dispatcher and
cues, measure the pipeline around a GPU's engine on a machine without one; with `--paced-workers N`, on
N such workers too, as N GPUs would be. It prints
`RESULT paced_vs_engine=X paced_vs_bound=Y [paced_scaling_N=S paced_vs_bound_N=Z]`: end to end over the
engine's own time (every window in batches of 32), over the slower of the engine's time and the VAD's
alone on this machine, N workers' speed over one's, and N workers' time over their bound.

`--fixed-tokens N` is for models with random weights (the GPU kit's): their text is garbage and
where it ends is chance, so every 30-s window is made to decode exactly N tokens, once, in every run.
Where PyAV is not installed (on the GPU kit's machine it does not fit beside CTranslate2), every run
reads the file with soundfile instead: a 16 kHz mono WAV or FLAC, such as the generated one.
"""

import argparse
import functools
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import av  # noqa: E402
from faster_whisper import BatchedInferencePipeline, WhisperModel  # noqa: E402

import vad_splitter  # noqa: E402
from audio import load_audio  # noqa: E402
from datatypes import BLOCK_SAMPLES, SAMPLE_RATE, Segment, TranscribeOptions, Word, WorkUnit  # noqa: E402
from devices import parse_devices  # noqa: E402
from models import model_label, resolve_model  # noqa: E402
from parallel_transcriber import ParallelTranscriber  # noqa: E402
from pipeline import transcribe_file  # noqa: E402
from reference_vad import silero_spans, unit_spans  # noqa: E402
from startup import start_pool  # noqa: E402
from transcriber import WhisperTranscriber  # noqa: E402
from vad_splitter import VadOptions, split_audio  # noqa: E402
from worker import ModelSpec  # noqa: E402

# The GPU kit puts an empty stand-in module where PyAV is not installed.
HAVE_PYAV = hasattr(av, "open")


def generate_talk(path: Path, minutes: float) -> str:
    """A long file of the test sentences in varied order with pauses of 0.3-3 s; returns its text."""
    import speech  # the tests' espeak-ng speech, so that the reference text is known

    random = np.random.default_rng(1)
    voices = {sentence: speech.speak(sentence) for sentence in speech.SENTENCES}
    pieces, texts, seconds = [speech.silence(1.0)], [], 1.0
    while seconds < minutes * 60:
        sentence = speech.SENTENCES[random.integers(len(speech.SENTENCES))]
        pause = speech.silence(float(random.choice([0.3, 0.5, 0.8, 1.2, 2.0, 3.0])))
        pieces += [voices[sentence], pause]
        texts.append(sentence)
        seconds += (len(voices[sentence]) + len(pause)) / SAMPLE_RATE
    soundfile.write(path, np.concatenate(pieces), SAMPLE_RATE)
    return " ".join(texts)


def generate_long_sentences(path: Path, minutes: float) -> str:
    """A long file of long sentences, each three of the test sentences joined into one ("..., while
    ..., because ...") and spoken a clause at a time: 0.35-0.6 s between clauses, 0.8-1.2 s between
    sentences. Units cut at any pause split sentences; returns its text."""
    import speech

    random = np.random.default_rng(2)
    long_enough = [sentence for sentence in speech.SENTENCES if len(sentence.split()) > 2]
    pieces, texts, seconds = [speech.silence(1.0)], [], 1.0
    while seconds < minutes * 60:
        chosen = [sentence.rstrip(".?") for sentence in random.choice(long_enough, 3, replace=False)]
        clauses = [
            chosen[0],
            "while " + chosen[1][0].lower() + chosen[1][1:],
            "because " + chosen[2][0].lower() + chosen[2][1:] + ".",
        ]
        for number, clause in enumerate(clauses):
            pause = float(random.uniform(0.35, 0.6) if number < 2 else random.uniform(0.8, 1.2))
            pieces += [speech.speak(clause), speech.silence(pause)]
            seconds += (len(pieces[-2]) + len(pieces[-1])) / SAMPLE_RATE
        texts.append(", ".join(clauses))
    soundfile.write(path, np.concatenate(pieces), SAMPLE_RATE)
    return " ".join(texts)


def read_audio(path: Path) -> np.ndarray:
    return load_audio(path) if HAVE_PYAV else soundfile.read(path, dtype="float32")[0]


def read_blocks(path: Path):
    """The file block by block as `stream_audio` gives it, for where PyAV is not installed."""
    if soundfile.info(str(path)).samplerate != SAMPLE_RATE or soundfile.info(str(path)).channels != 1:
        raise SystemExit(f"{path}: without PyAV the file must be 16 kHz mono")
    return soundfile.blocks(str(path), blocksize=BLOCK_SAMPLES, dtype="float32")


def fixed_decoding(fixed_tokens: int | None, end_of_text: int) -> dict:
    """What makes every window decode exactly `fixed_tokens` tokens once: no end-of-text until then,
    and no second try at a higher temperature, which random text would always set off."""
    if not fixed_tokens:
        return {}
    return {"max_new_tokens": fixed_tokens, "suppress_tokens": [end_of_text], "temperature": 0.0}


class FixedDecodingTranscriber(WhisperTranscriber):
    """This project's engine, with every window decoding exactly FIXED_TOKENS tokens (from the
    environment, because worker processes get the class, not an instance). Random weights write text
    that fails every check of `redecoding.py`: no unit is decoded again, as nearly none is with real ones."""

    decodes_again = False

    def __init__(self, *args):
        super().__init__(*args)
        end_of_text = self.model.hf_tokenizer.token_to_id("<|endoftext|>")
        extra = fixed_decoding(int(os.environ["FIXED_TOKENS"]), end_of_text)
        self.pipeline.transcribe = functools.partial(self.pipeline.transcribe, **extra)


# A GPU's speed by batch size, in seconds of audio per second (../shared/gpu/README.md: H200, random-weight
# large-v3-turbo, float16, 100 tokens a window; batch 1 is faster-whisper's sequential transcribe).
# Decoding takes a step per token whatever the batch, so a small batch costs more per window.
GPU_SPEED_BY_BATCH = {1: 259, 8: 625, 16: 663, 32: 702, 64: 678}


def paced_batch_seconds(windows: int, seconds_per_window: float) -> float:
    """How long a GPU takes for a batch of `windows` 30-s windows, where a batch of 32 takes
    `seconds_per_window` for each: the reference batch times, scaled, and linear between them."""
    sizes = sorted(GPU_SPEED_BY_BATCH)
    times = [size * seconds_per_window * GPU_SPEED_BY_BATCH[32] / GPU_SPEED_BY_BATCH[size] for size in sizes]
    if windows > sizes[-1]:
        return windows * times[-1] / sizes[-1]
    return float(np.interp(windows, sizes, times))


class PacedTranscriber:
    """An engine without a model, for measuring everything around one: it sleeps as long as a GPU's
    engine takes for each batch (`paced_batch_seconds`, with PACED_ENGINE_S from the environment), and
    writes a word for each 0.4 s of speech, in sentences of eight, so that decoding, the VAD, the
    dispatcher, word edges and cues all work as they do around a real engine."""

    decodes_again = False
    multilingual = False

    def __init__(self, model_path: str, device: str, compute_type: str | None, cpu_threads: int, on_device: int):
        self.seconds_per_window = float(os.environ["PACED_ENGINE_S"])
        self.batch_size = 32  # a GPU's

    def detect_language(self, unit: WorkUnit) -> tuple[str, float]:
        return "en", 1.0

    def transcribe(self, units: list[WorkUnit], options: TranscribeOptions) -> list[list[Segment]]:
        time.sleep(paced_batch_seconds(len(units), self.seconds_per_window))
        return [[self._segment(unit)] for unit in units]

    @staticmethod
    def _segment(unit: WorkUnit) -> Segment:
        starts = [float(t) for start, end in unit.spans for t in np.arange(start + 0.3, end - 0.6, 0.4)]
        words = [
            Word(round(t, 3), round(t + 0.3, 3), " word." if number % 8 == 7 else " word", 0.9)
            for number, t in enumerate(starts or [unit.spans[0][0]])
        ]
        text = "".join(word.text for word in words).strip()
        return Segment(words[0].start, words[-1].end, text, words, avg_logprob=-0.2, language="en")


def vad_seconds_by_threads(audio: np.ndarray) -> dict[int, float]:
    """Seconds the VAD takes alone over `audio` on one thread, and on one per core."""
    split_audio(audio[: 2 * SAMPLE_RATE])  # loads the ONNX model outside the timing
    seconds = {}
    for threads in dict.fromkeys([1, os.cpu_count() or 1]):
        vad_splitter.THREADS = threads
        started = time.perf_counter()
        split_audio(audio)
        seconds[threads] = time.perf_counter() - started
    return seconds


def run_paced(args: argparse.Namespace, path: Path, audio: np.ndarray, vad_whole_s: float) -> None:
    """`--paced-engine`: the pipeline end to end around paced engines, on one worker and on
    `--paced-workers`, against the engine's own time and against the VAD's time alone."""
    os.environ["PACED_ENGINE_S"] = str(args.paced_engine)
    spec = ModelSpec(resolve_model(args.model), name="paced", engine=PacedTranscriber)
    runs = {}
    for workers in dict.fromkeys([1, args.paced_workers]):
        # Named for the GPUs they stand for: the dispatcher shares a long file among a server's GPUs.
        with ParallelTranscriber(spec, [f"cuda:{index}" for index in range(workers)]) as pool:
            transcribe_file(path, pool, blocks=[audio[: 30 * SAMPLE_RATE]])  # starts the worker processes' work
            result = run_ours(pool, path, VadOptions())
        batches = [units for _device, units, _began, _ended in result["batch_times"]]
        # The engine's own time: every window in full batches of 32, shared by the workers.
        engine_s = sum(batches) * args.paced_engine / workers
        slept_s = sum(paced_batch_seconds(units, args.paced_engine) for units in batches) / workers
        runs[workers] = {**result, "engine_s": engine_s, "bound_s": max(engine_s, vad_whole_s)}
        print(
            f"{workers} paced worker(s): {result['seconds']:.2f} s end to end; engine {engine_s:.2f} s "
            f"({sum(batches)} windows at {args.paced_engine} s, shared by {workers}), {slept_s:.2f} s in the "
            f"job's batches ({', '.join(map(str, batches))}); VAD alone {vad_whole_s:.2f} s; "
            + ", ".join(f"{stage} {value:.2f}" for stage, value in result["stages"].items())
            + "; "
            + ", ".join(f"{what} {value:.2f}" for what, value in result["pace"].items())
        )
    one = runs[1]
    line = (
        f"RESULT paced_vs_engine={one['seconds'] / one['engine_s']:.2f} "
        f"paced_vs_bound={one['seconds'] / one['bound_s']:.2f}"
    )
    if args.paced_workers > 1:
        many = runs[args.paced_workers]
        line += f" paced_scaling_{args.paced_workers}={one['seconds'] / many['seconds']:.2f}"
        line += f" paced_vs_bound_{args.paced_workers}={many['seconds'] / many['bound_s']:.2f}"
    print(line)


def run_faster_whisper(model: WhisperModel, path: Path, batched: bool, fixed_tokens: int | None) -> dict:
    extra = fixed_decoding(fixed_tokens, model.hf_tokenizer.token_to_id("<|endoftext|>"))
    started = time.perf_counter()
    audio = read_audio(path)
    decoded = time.perf_counter()
    if batched:
        pipeline = BatchedInferencePipeline(model)
        segments, _ = pipeline.transcribe(audio, batch_size=16, word_timestamps=True, **extra)
    else:
        segments, _ = model.transcribe(audio, vad_filter=True, word_timestamps=True, **extra)
    text = " ".join(segment.text for segment in segments)  # the generator does the work
    finished = time.perf_counter()
    stages = {"decode": decoded - started, "vad+transcribe": finished - decoded}
    return {"text": text, "stages": stages, "seconds": finished - started, "duration": len(audio) / SAMPLE_RATE}


def run_ours(pool: ParallelTranscriber, path: Path, vad_options: VadOptions) -> dict:
    started = time.perf_counter()
    transcript = transcribe_file(path, pool, vad_options=vad_options, blocks=None if HAVE_PYAV else read_blocks(path))
    seconds = time.perf_counter() - started
    text = " ".join(cue.text.replace("\n", " ") for cue in transcript.cues)
    # How well the workers (the GPU) were kept busy: when the first batch began, how long they waited.
    pace = {"first batch": transcript.first_batch_s, "workers idle": transcript.workers_idle_s}
    return {
        "text": text,
        "stages": transcript.stage_seconds,
        "pace": pace,
        "seconds": seconds,
        "duration": transcript.duration,
        "batch_times": transcript.batch_times,
    }


def run_vad_comparison(audio: np.ndarray) -> dict:
    """Our VAD, as the pipeline runs it (stitched stretches on every core), against the silero-vad
    package's own `get_speech_timestamps` with the same options."""
    split_audio(audio[: 2 * SAMPLE_RATE])  # loads the ONNX model outside the timing
    started = time.perf_counter()
    ours = unit_spans(split_audio(audio))
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = silero_spans(audio)
    theirs_s = time.perf_counter() - started
    worst_ms = max((abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y)), default=0) / 16
    return {
        "ours_s": ours_s,
        "silero_s": theirs_s,
        "speedup": theirs_s / ours_s,
        "spans": [len(ours), len(theirs)],
        "same_span_count": len(ours) == len(theirs),
        "worst_edge_ms": worst_ms,
        "duration": len(audio) / SAMPLE_RATE,
    }


def _time_transcription(model_path: str, units: list) -> float:
    """Seconds one single-thread CPU process takes for `units`, after loading its model."""
    engine = WhisperTranscriber(model_path, "cpu", "int8", cpu_threads=1)
    started = time.perf_counter()
    for first in range(0, len(units), 8):
        engine.transcribe(units[first : first + 8], TranscribeOptions(language="en"))
    return time.perf_counter() - started


def cpu_scaling_ceiling(audio: np.ndarray, model_path: str, processes: int) -> dict:
    """How much faster `processes` independent single-thread processes are than one, on the same
    units, with no pool, no parent and no scheduling: the most any worker pool could get here."""
    units = split_audio(audio)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        alone = pool.apply(_time_transcription, (model_path, units))
    with context.Pool(processes) as pool:
        shares = [units[index::processes] for index in range(processes)]
        together = max(pool.starmap(_time_transcription, [(model_path, share) for share in shares]))
    return {"one_process_s": alone, "processes": processes, "together_s": together, "speedup": alone / together}


WEAK_VAD = "ours, VAD 0.25"


def run_timing_tables(args: argparse.Namespace) -> None:
    """`--timing`: the tables of `timing.py`, ours (on every worker of `--devices`) against faster-whisper."""
    import timing

    from speech import Placed, edge_errors

    work = ROOT / "bench" / "out"
    work.mkdir(parents=True, exist_ok=True)
    timed_audio, spoken = timing.timing_composition()
    hard_audio, said = timing.hard_composition()
    files = {"timing.flac": timed_audio, "hard-speech.flac": hard_audio}
    for name, samples in files.items():
        soundfile.write(work / name, samples, SAMPLE_RATE)
    timed_files = {work / "timing.flac": spoken}
    if args.audio and args.reference_times:
        timed_files[Path(args.audio)] = timing.read_reference_times(Path(args.reference_times))
    model_path, devices = resolve_model(args.model), parse_devices(args.devices)
    kind, _, index = devices[0].partition(":")
    compute_type = args.compute_type or ("float16" if kind == "cuda" else "int8")
    model = WhisperModel(model_path, device=kind, device_index=int(index or 0), compute_type=compute_type)
    paths = [*timed_files, work / "hard-speech.flac"]
    shown: dict[str, dict[Path, list]] = {"faster-whisper": {}, "ours": {}, WEAK_VAD: {}}
    for path in paths:
        segments, _ = model.transcribe(str(path), vad_filter=True, word_timestamps=True)
        shown["faster-whisper"][path] = [Placed(item.text, item.start, item.end) for item in segments]
    spec = ModelSpec(model_path, name=model_label(args.model), compute_type=args.compute_type)
    with ParallelTranscriber(spec, devices) as pool:

        def cues_of(path: Path, vad_options: VadOptions = VadOptions()) -> list[Placed]:
            cues = transcribe_file(path, pool, vad_options=vad_options).cues
            return [Placed(cue.text.replace("\n", " "), cue.start, cue.end) for cue in cues]

        shown["ours"] = {path: cues_of(path) for path in paths}
        # Quiet, whispered and hoarse words are lost by the VAD, not by Whisper: a lower threshold finds them.
        shown[WEAK_VAD][paths[-1]] = cues_of(paths[-1], VadOptions(threshold=0.25))
    print(f"\nmodel {model_label(args.model)}, devices {','.join(devices)}, {os.cpu_count()} cores")
    for path, sentences in timed_files.items():
        rows = {
            name: timing.timing_row(edge_errors(sentences, runs[path])) for name, runs in shown.items() if path in runs
        }
        timing.print_timing_table(f"Timing on {path.name} ({len(sentences)} sentences)", rows)
    hard = work / "hard-speech.flac"
    minutes = len(hard_audio) / SAMPLE_RATE / 60
    reference = " ".join(sentence.text for sentence in said)
    rows = {
        name: timing.hearing_row(reference, " ".join(item.text for item in runs[hard]), minutes)
        for name, runs in shown.items()
    }
    timing.print_hearing_table(f"Hard speech ({hard.name}, {minutes:.1f} min)", rows)


def prepare_audio(args: argparse.Namespace, work: Path) -> tuple[Path, str | None]:
    """The file to run on (generated, or given and repeated `--repeat` times) and its text if known."""
    if args.audio:
        path, reference = Path(args.audio), Path(args.reference).read_text() if args.reference else None
    elif args.long_sentences:
        path = work / f"long-sentences-{args.minutes:g}min.flac"
        reference = generate_long_sentences(path, args.minutes)
    else:
        path = work / f"talk-{args.minutes:g}min.flac"
        reference = generate_talk(path, args.minutes)
    if args.repeat > 1:
        repeated = work / f"{path.stem}-x{args.repeat}.flac"
        soundfile.write(repeated, np.tile(read_audio(path), args.repeat), SAMPLE_RATE)
        path, reference = repeated, " ".join([reference] * args.repeat) if reference else None
    return path, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="?", help="a long file (default: generate a 10-minute one)")
    parser.add_argument("--reference", help="a text file with what is said in AUDIO")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the generated file")
    parser.add_argument(
        "--long-sentences",
        action="store_true",
        help="generate long sentences spoken a clause at a time instead (accuracy where units cut sentences)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run on the file played this many times over")
    parser.add_argument(
        "--unit-fill",
        type=float,
        default=vad_splitter.MIN_UNIT_FILL,
        help="a full unit ends at the longest pause once this full (1.0: just before the span "
        "that does not fit, the earlier packing)",
    )
    parser.add_argument(
        "--min-silence-ms",
        type=int,
        default=VadOptions().min_silence_duration_ms,
        help="our VAD: the shortest pause that ends a speech span",
    )
    parser.add_argument(
        "--speech-pad-ms",
        type=int,
        default=VadOptions().speech_pad_ms,
        help="our VAD: speech kept on each side of a span",
    )
    parser.add_argument("--model", help="default: the project's default model")
    parser.add_argument(
        "--devices",
        default="auto",
        help="for (d) (auto: every GPU, else one CPU worker per core); (a), (b) and (c) use the first",
    )
    parser.add_argument("--compute-type", help="default: float16 on GPU, int8 on CPU")
    parser.add_argument("--fixed-tokens", type=int, help="decode exactly this many tokens per window (random weights)")
    parser.add_argument(
        "--no-sequential",
        action="store_true",
        help="leave out (a), which takes minutes on a long file; RESULT then compares with (b) only",
    )
    parser.add_argument(
        "--vad-minutes",
        type=float,
        default=10.0,
        help="compare the VAD with silero-vad's own on this much of the file (theirs is slow)",
    )
    parser.add_argument("--ray-address", help="also run (e): the workers of (d) as Ray actors on this cluster")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--paced-engine",
        type=float,
        metavar="SECONDS_PER_WINDOW",
        help="only paced runs: workers that sleep this long per 30-s window instead of running a model",
    )
    parser.add_argument("--paced-workers", type=int, default=1, help="with --paced-engine: also this many workers")
    parser.add_argument("--timing", action="store_true", help="print the timing and hard-speech tables only")
    parser.add_argument("--reference-times", help="with --timing: an SRT file of the utterances in AUDIO")
    args = parser.parse_args()
    if args.timing:
        run_timing_tables(args)
        return

    work = ROOT / "bench" / "out"
    work.mkdir(parents=True, exist_ok=True)
    path, reference = prepare_audio(args, work)
    vad_splitter.MIN_UNIT_FILL = args.unit_fill
    vad_options = VadOptions(min_silence_duration_ms=args.min_silence_ms, speech_pad_ms=args.speech_pad_ms)
    model_path = resolve_model(args.model)
    devices = parse_devices(args.devices)
    kind, _, index = devices[0].partition(":")
    compute_type = args.compute_type or ("float16" if kind == "cuda" else "int8")
    engine = WhisperTranscriber
    if args.fixed_tokens:
        os.environ["FIXED_TOKENS"] = str(args.fixed_tokens)
        engine = FixedDecodingTranscriber
    audio = read_audio(path)
    if args.paced_engine:
        print(f"\n{path.name}: {len(audio) / SAMPLE_RATE:.0f} s of audio, {os.cpu_count()} cores")
        vad_s = vad_seconds_by_threads(audio)
        print(
            "VAD alone: "
            + ", ".join(f"{threads} thread(s) {seconds:.2f} s" for threads, seconds in vad_s.items())
            + f" ({vad_s[1] / vad_s[max(vad_s)]:.2f}x)"
        )
        run_paced(args, path, audio, vad_s[max(vad_s)])
        return
    results = {"vad": run_vad_comparison(audio[: int(args.vad_minutes * 60 * SAMPLE_RATE)])}
    started = time.perf_counter()
    split_audio(audio)
    vad_whole_s = time.perf_counter() - started

    # faster-whisper gets every core of the machine, as a user running it alone would give it.
    model = WhisperModel(
        model_path,
        device=kind,
        device_index=int(index or 0),
        compute_type=compute_type,
        cpu_threads=os.cpu_count() if kind == "cpu" else 0,
    )
    # Every run starts warm: a device's first call pays for setting up its libraries (seconds on a GPU).
    warm_up = audio[: 30 * SAMPLE_RATE]
    list(model.transcribe(warm_up, max_new_tokens=10)[0])
    if not args.no_sequential:
        results["a sequential"] = run_faster_whisper(model, path, batched=False, fixed_tokens=args.fixed_tokens)
    results["b batched-16"] = run_faster_whisper(model, path, batched=True, fixed_tokens=args.fixed_tokens)
    del model
    ours_name = f"d ours {len(devices)} workers" if len(devices) > 1 else "c ours 1 worker"
    runs = {"c ours 1 worker": (devices[:1], None), ours_name: (devices, None)}
    if kind == "cpu":
        # One CPU worker already spreads over every core through CTranslate2's threads; this run
        # shows how workers scale when each has one core.
        runs["c1 ours 1 worker 1 thread"] = (devices[:1], 1)
    if args.ray_address:
        runs["e ours on Ray"] = (devices, None)
    for name, (worker_devices, threads) in runs.items():
        spec = ModelSpec(
            model_path, name=model_label(args.model), compute_type=args.compute_type, cpu_threads=threads, engine=engine
        )
        # (e): as many single-device actors as (d) has workers, anywhere on the cluster.
        cluster = (f"{kind}*{len(worker_devices)}", args.ray_address) if name == "e ours on Ray" else None
        with start_pool(spec, *cluster) if cluster else ParallelTranscriber(spec, worker_devices) as pool:
            transcribe_file(path, pool, blocks=[warm_up])
            results[name] = run_ours(pool, path, vad_options)
            results[name]["batch_sizes"] = pool.batch_sizes
    if kind == "cpu" and len(devices) > 1:
        results["ceiling"] = cpu_scaling_ceiling(audio, model_path, len(devices))

    print(
        f"\n{path.name}: {len(audio) / SAMPLE_RATE:.0f} s of audio, model {model_label(args.model)}, "
        f"devices {','.join(devices)}, {os.cpu_count()} cores"
    )
    vad = results["vad"]
    print(
        f"VAD on the first {vad['duration']:.0f} s: ours {vad['ours_s']:.2f} s, silero-vad get_speech_timestamps "
        f"{vad['silero_s']:.2f} s ({vad['speedup']:.1f}x); spans {vad['spans'][0]} vs {vad['spans'][1]}, "
        f"worst edge {vad['worst_edge_ms']:.0f} ms"
    )
    results["vad_whole_file_s"] = vad_whole_s
    print(
        f"VAD alone on the whole file: {vad_whole_s:.2f} s, "
        f"{100 * vad_whole_s / results[ours_name]['seconds']:.1f} % of ours end to end"
    )
    print(f"{'run':<26} {'x realtime':>10} {'seconds':>8} {'WER':>6}  stages (s)")
    if reference:
        from helpers import word_error_rate  # jiwer: not needed where the text is not known
    for name in [name for name in ["a sequential", "b batched-16", *runs] if name in results]:
        result = results[name]
        result["x_realtime"] = result["duration"] / result["seconds"]
        result["wer"] = word_error_rate(reference, result["text"]) if reference else None
        wer = f"{100 * result['wer']:5.1f}%" if reference else "   -  "
        stages = ", ".join(f"{stage} {value:.2f}" for stage, value in result["stages"].items())
        batches = f", batch sizes {result['batch_sizes']}" if "batch_sizes" in result else ""
        if "pace" in result:
            batches += "; " + ", ".join(f"{what} {value:.2f}" for what, value in result["pace"].items())
        print(f"{name:<26} {result['x_realtime']:>10.1f} {result['seconds']:>8.2f} {wer}  {stages}{batches}")
    ours = results[ours_name]["seconds"]
    if kind == "cpu" and len(devices) > 1:
        ceiling = results["ceiling"]
        print(
            f"{len(devices)} workers against 1 worker of one core: "
            f"{results['c1 ours 1 worker 1 thread']['seconds'] / ours:.2f}x; ceiling, {ceiling['processes']} bare "
            f"single-thread processes against 1 on the same units: {ceiling['speedup']:.2f}x "
            f"({ceiling['one_process_s']:.1f} s alone, {ceiling['together_s']:.1f} s together)"
        )
    if args.ray_address:
        print(
            f"Ray's overhead: (e) against (d), the same workers as local processes: "
            f"{100 * (results['e ours on Ray']['seconds'] / results[ours_name]['seconds'] - 1):+.1f} %"
        )
    if args.json:
        for result in results.values():
            if isinstance(result, dict):
                result.pop("text", None)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"ours = {ours_name}")
    sequential = (
        f"ours_vs_sequential={results['a sequential']['seconds'] / ours:.2f} " if "a sequential" in results else ""
    )
    print(f"RESULT {sequential}ours_vs_batched={results['b batched-16']['seconds'] / ours:.2f}")


if __name__ == "__main__":
    main()

"""End-to-end speed and accuracy against faster-whisper, all measured in one run.

    python bench/bench.py                      # generates a 10-minute file, CPU, the default offline model
    python bench/bench.py talk.flac --reference talk.txt --model large-v3-turbo --devices cuda:0,cuda:1

Runs, on the same model and device: (a) faster-whisper's sequential `WhisperModel.transcribe` with its VAD,
(b) its `BatchedInferencePipeline` (batch 16), (c) this project with one worker, (d) with all workers.
Model loading is outside every timing. The last line is
`RESULT ours_vs_sequential=<x> ours_vs_batched=<y>`: end-to-end speed ratios of (d) against (a) and (b).
"""

import argparse
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

from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio  # noqa: E402

import speech  # noqa: E402  (the tests' espeak-ng speech, so the reference text is known)
from helpers import word_error_rate  # noqa: E402
from parallel_transcriber import ModelSpec, ParallelTranscriber, parse_devices  # noqa: E402
from pipeline import transcribe_file  # noqa: E402
from transcriber import TranscribeOptions, WhisperTranscriber, model_label, resolve_model  # noqa: E402


def generate_talk(path: Path, minutes: float) -> str:
    """A long file of the test sentences in varied order with pauses of 0.3-3 s; returns its text."""
    random = np.random.default_rng(1)
    voices = {sentence: speech.speak(sentence) for sentence in speech.SENTENCES}
    pieces, texts, seconds = [speech.silence(1.0)], [], 1.0
    while seconds < minutes * 60:
        sentence = speech.SENTENCES[random.integers(len(speech.SENTENCES))]
        pause = speech.silence(float(random.choice([0.3, 0.5, 0.8, 1.2, 2.0, 3.0])))
        pieces += [voices[sentence], pause]
        texts.append(sentence)
        seconds += (len(voices[sentence]) + len(pause)) / speech.SAMPLE_RATE
    soundfile.write(path, np.concatenate(pieces), speech.SAMPLE_RATE)
    return " ".join(texts)


def run_faster_whisper(model: WhisperModel, path: Path, batched: bool) -> dict:
    started = time.perf_counter()
    audio = decode_audio(str(path))
    decoded = time.perf_counter()
    if batched:
        segments, _ = BatchedInferencePipeline(model).transcribe(audio, batch_size=16, word_timestamps=True)
    else:
        segments, _ = model.transcribe(audio, vad_filter=True, word_timestamps=True)
    text = " ".join(segment.text for segment in segments)  # the generator does the work
    finished = time.perf_counter()
    stages = {"decode": decoded - started, "vad+transcribe": finished - decoded}
    return {"text": text, "stages": stages, "seconds": finished - started, "duration": len(audio) / 16000}


def run_ours(pool: ParallelTranscriber, path: Path) -> dict:
    started = time.perf_counter()
    transcript = transcribe_file(path, pool)
    seconds = time.perf_counter() - started
    text = " ".join(cue.text.replace("\n", " ") for cue in transcript.cues)
    return {"text": text, "stages": transcript.stage_seconds, "seconds": seconds, "duration": transcript.duration}


def run_vad_comparison(path: Path) -> dict:
    """Our stitched, multi-threaded Silero against the silero-vad package's own function."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    from audio import load_audio
    from vad_splitter import VadOptions, find_speech, speech_probabilities

    audio = load_audio(path)
    options = VadOptions()
    speech_probabilities(audio[:16000])  # load the ONNX model outside the timing
    started = time.perf_counter()
    ours = find_speech(audio, options)
    ours_s = time.perf_counter() - started
    model = load_silero_vad()
    started = time.perf_counter()
    theirs = get_speech_timestamps(
        torch.from_numpy(audio), model, threshold=options.threshold, min_speech_duration_ms=options.min_speech_ms,
        max_speech_duration_s=options.max_unit_s, min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
    )
    theirs_s = time.perf_counter() - started
    theirs = [(span["start"], span["end"]) for span in theirs]
    same_count = len(ours) == len(theirs)
    worst_ms = max((abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y)), default=0) / 16
    return {"ours_s": ours_s, "silero_s": theirs_s, "speedup": theirs_s / ours_s, "spans": [len(ours), len(theirs)],
            "same_span_count": same_count, "worst_edge_ms": worst_ms, "duration": len(audio) / 16000}


def _time_transcription(model_path: str, units: list) -> float:
    """Seconds one single-thread CPU process takes for `units`, after loading its model."""
    engine = WhisperTranscriber(model_path, "cpu", "int8", cpu_threads=1)
    started = time.perf_counter()
    for first in range(0, len(units), 8):
        engine.transcribe(units[first : first + 8], TranscribeOptions(language="en"))
    return time.perf_counter() - started


def cpu_scaling_ceiling(path: Path, model_path: str, processes: int) -> dict:
    """How much faster `processes` independent single-thread processes are than one, on the same
    units, with no pool, no parent and no scheduling: the most any worker pool could get here."""
    from audio import load_audio
    from vad_splitter import split_audio

    units = split_audio(load_audio(path))
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        alone = pool.apply(_time_transcription, (model_path, units))
    with context.Pool(processes) as pool:
        shares = [units[index::processes] for index in range(processes)]
        together = max(pool.starmap(_time_transcription, [(model_path, share) for share in shares]))
    return {"one_process_s": alone, "processes": processes, "together_s": together, "speedup": alone / together}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="?", help="a long file (default: generate a 10-minute one)")
    parser.add_argument("--reference", help="a text file with what is said in AUDIO")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the generated file")
    parser.add_argument("--model", help="default: the project's default model")
    parser.add_argument("--devices", default="auto",
                        help="for (d) (auto: every GPU, else one CPU worker per core); (a), (b) and (c) use the first")
    parser.add_argument("--compute-type", help="default: float16 on GPU, int8 on CPU")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    work = ROOT / "bench" / "out"
    work.mkdir(parents=True, exist_ok=True)
    if args.audio:
        path, reference = Path(args.audio), Path(args.reference).read_text() if args.reference else None
    else:
        path = work / f"talk-{args.minutes:g}min.flac"
        reference = generate_talk(path, args.minutes)

    model_path = resolve_model(args.model)
    devices = parse_devices(args.devices)
    kind, _, index = devices[0].partition(":")
    compute_type = args.compute_type or ("float16" if kind == "cuda" else "int8")
    results = {"vad": run_vad_comparison(path)}

    # faster-whisper gets every core of the machine, as a user running it alone would give it.
    model = WhisperModel(model_path, device=kind, device_index=int(index or 0), compute_type=compute_type,
                         cpu_threads=os.cpu_count() if kind == "cpu" else 0)
    results["a sequential"] = run_faster_whisper(model, path, batched=False)
    results["b batched-16"] = run_faster_whisper(model, path, batched=True)
    del model
    runs = {"c ours 1 worker": (devices[:1], None), f"d ours {len(devices)} workers": (devices, None)}
    if kind == "cpu":
        # One CPU worker already spreads over every core through CTranslate2's threads; this run
        # shows how workers scale when each has one core.
        runs["c1 ours 1 worker 1 thread"] = (devices[:1], 1)
    for name, (worker_devices, threads) in runs.items():
        spec = ModelSpec(model_path, name=model_label(args.model), compute_type=args.compute_type, cpu_threads=threads)
        with ParallelTranscriber(spec, worker_devices) as pool:
            results[name] = run_ours(pool, path)
    if kind == "cpu" and len(devices) > 1:
        results["ceiling"] = cpu_scaling_ceiling(path, model_path, len(devices))
    ours_name = f"d ours {len(devices)} workers"

    print(f"\n{path.name}: {results['vad']['duration']:.0f} s of audio, model {model_label(args.model)}, "
          f"devices {','.join(devices)}")
    vad = results["vad"]
    print(f"VAD: ours {vad['ours_s']:.2f} s, silero-vad get_speech_timestamps {vad['silero_s']:.2f} s "
          f"({vad['speedup']:.1f}x); spans {vad['spans'][0]} vs {vad['spans'][1]}, worst edge {vad['worst_edge_ms']:.0f} ms")
    print(f"{'run':<20} {'x realtime':>10} {'seconds':>8} {'WER':>6}  stages (s)")
    for name, result in results.items():
        if name in ("vad", "ceiling"):
            continue
        result["x_realtime"] = result["duration"] / result["seconds"]
        result["wer"] = word_error_rate(reference, result["text"]) if reference else None
        wer = f"{100 * result['wer']:5.1f}%" if reference else "   -  "
        stages = ", ".join(f"{stage} {value:.2f}" for stage, value in result["stages"].items())
        print(f"{name:<20} {result['x_realtime']:>10.1f} {result['seconds']:>8.2f} {wer}  {stages}")
    ours = results[ours_name]["seconds"]
    scaling_base = results.get("c1 ours 1 worker 1 thread", results["c ours 1 worker"])["seconds"]
    print(f"ours = {ours_name}; {len(devices)} workers against 1 worker of one core: "
          f"{scaling_base / results[f'd ours {len(devices)} workers']['seconds']:.2f}x")
    if "ceiling" in results:
        ceiling = results["ceiling"]
        print(f"ceiling: {ceiling['processes']} bare single-thread processes against 1, same units: "
              f"{ceiling['speedup']:.2f}x ({ceiling['one_process_s']:.1f} s alone, {ceiling['together_s']:.1f} s together)")
    if args.json:
        for result in results.values():
            result.pop("text", None)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"RESULT ours_vs_sequential={results['a sequential']['seconds'] / ours:.2f} "
          f"ours_vs_batched={results['b batched-16']['seconds'] / ours:.2f}")


if __name__ == "__main__":
    main()

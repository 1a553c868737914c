"""The command-line pipeline on real audio with the real tiny.en model."""

import importlib.util
import json
import re
import subprocess
import sys
import threading
from statistics import median

import numpy as np
import pysubs2
import pytest
import srt
import webvtt

import speech
import vad_splitter
from audio import load_audio
from conftest import make_media
from cue_rules import assert_cues_obey_the_rules
from datatypes import BLOCK_SAMPLES, SAMPLE_RATE, TranscribeOptions
from helpers import ROOT, run_cli, word_error_rate
from pipeline import transcribe_file
from reference_vad import silero_spans, unit_spans
from subtitles import BROADCAST
from vad_splitter import VadOptions, split_audio, stream_units
from writers import read_json, render


@pytest.fixture(scope="module")
def jfk_transcript(two_workers, jfk):
    return transcribe_file(jfk[0], two_workers)


@pytest.fixture(scope="module")
def composition_transcript(two_workers, composition):
    return transcribe_file(composition[0], two_workers)


def test_jfk_words_match_the_reference(jfk_transcript, jfk):
    text = " ".join(cue.text for cue in jfk_transcript.cues)
    assert word_error_rate(jfk[1], text) <= 0.10, text


def test_audio_decoded_by_the_caller_gives_the_same_transcript(jfk_transcript, two_workers, jfk):
    transcript = transcribe_file(jfk[0], two_workers, blocks=iter([load_audio(jfk[0])]))  # 11 s: one block
    assert transcript.duration == jfk_transcript.duration
    assert [(w.start, w.end, w.text) for s in transcript.segments for w in s.words] == [
        (w.start, w.end, w.text) for s in jfk_transcript.segments for w in s.words
    ]


def test_jfk_srt_parses_and_lies_within_the_audio(jfk_transcript):
    cues = list(srt.parse(render(jfk_transcript, "srt")))
    assert cues and [cue.index for cue in cues] == list(range(1, len(cues) + 1))
    for previous, cue in zip(cues, cues[1:]):
        assert previous.end <= cue.start
    assert cues[0].start.total_seconds() >= 0
    assert cues[-1].end.total_seconds() <= jfk_transcript.duration


def test_composition_every_sentence_found_where_it_was_placed(composition_transcript, composition):
    _path, placed = composition
    cues = composition_transcript.cues
    heard: dict[int, list[str]] = {index: [] for index in range(len(placed))}
    for cue in cues:
        # The sentence its words were spoken in (each word's middle, give or take Whisper's timing):
        # one, and the cue shown near it.
        homes = sorted(
            {
                i
                for word in cue.words
                for i, s in enumerate(placed)
                if s.start - 0.3 <= (word.start + word.end) / 2 <= s.end + 0.3
            }
        )
        assert len(homes) == 1, f"cue {cue.text!r} holds words of sentences {homes}"
        sentence = placed[homes[0]]
        assert sentence.start - 0.5 <= cue.start and cue.end <= sentence.end + 0.5, (
            f"cue {cue.start}-{cue.end} {cue.text!r} is shown away from its sentence"
        )
        heard[homes[0]].append(cue.text)
    for index, sentence in enumerate(placed):
        assert heard[index], f"sentence not found: {sentence.text!r}"
        assert word_error_rate(sentence.text, " ".join(heard[index])) <= 0.5, (sentence.text, heard[index])
    reference = " ".join(s.text for s in placed)
    assert word_error_rate(reference, " ".join(cue.text for cue in cues)) <= 0.15


def test_composition_cues_obey_the_subtitle_rules(composition_transcript):
    words = [word for segment in composition_transcript.segments for word in segment.words]
    assert_cues_obey_the_rules(composition_transcript.cues, words, BROADCAST)


def test_composition_cues_are_on_screen_while_their_sentence_is_spoken(composition_transcript, composition):
    """No cue leaves the screen before its sentence's last sound (50 ms of leeway), and cues appear as
    their sentences start: within 0.10 s as a rule (the median), 0.25 s at worst."""
    _path, placed = composition
    shown = [speech.Placed(cue.text, cue.start, cue.end) for cue in composition_transcript.cues]
    errors = speech.edge_errors(placed, shown)
    assert None not in errors, [sentence.text for sentence, error in zip(placed, errors) if error is None]
    onsets, ends = [onset for onset, _ in errors], [end for _, end in errors]
    assert min(ends) >= -0.05, [(s.text, round(end, 3)) for s, end in zip(placed, ends) if end < -0.05]
    assert abs(median(onsets)) <= 0.10 and max(map(abs, onsets)) <= 0.25, onsets


def test_composition_no_cue_in_the_long_silence_or_the_tone(composition_transcript, composition):
    _path, placed = composition
    middle = len(speech.SENTENCES) // 2
    quiet_start, quiet_end = placed[middle - 1].end, placed[middle].start
    assert quiet_end - quiet_start > 30  # the 20-s silence and the 10-s tone lie here
    for cue in composition_transcript.cues:
        assert cue.end <= quiet_start + 0.5 or cue.start >= quiet_end - 0.5, cue


def test_writers_parse_with_independent_readers(composition_transcript, tmp_path):
    expected = [cue.text for cue in composition_transcript.cues]
    assert [cue.content for cue in srt.parse(render(composition_transcript, "srt"))] == expected
    vtt_path = tmp_path / "out.vtt"
    vtt_path.write_text(render(composition_transcript, "vtt"), encoding="utf-8")
    assert [caption.text for caption in webvtt.read(vtt_path)] == expected
    document = json.loads(render(composition_transcript, "json"))
    assert document["language"] == "en"
    words = [w for segment in document["segments"] for w in segment["words"]]
    assert words and all({"start", "end", "text", "probability"} <= w.keys() for w in words)
    assert render(composition_transcript, "txt").splitlines() == [
        cue.text.replace("\n", " ") for cue in composition_transcript.cues
    ]
    again = read_json(render(composition_transcript, "json"))  # what the page keeps of a job, read back
    assert (
        render(again, "srt") == render(composition_transcript, "srt")
        and again.segments == composition_transcript.segments
    )
    dialogue = [
        line.split(",,", 2)[-1]
        for line in render(composition_transcript, "ass").splitlines()
        if line.startswith("Dialogue:")
    ]
    assert dialogue == [cue.text.replace("\n", "\\N") for cue in composition_transcript.cues]


def test_word_highlight_on_real_words_keeps_the_text_and_times_every_word(composition_transcript, tmp_path):
    cues = composition_transcript.cues
    vtt_path = tmp_path / "karaoke.vtt"
    vtt_path.write_text(render(composition_transcript, "vtt", word_highlight=True), encoding="utf-8")
    captions = webvtt.read(vtt_path)
    assert len(captions) == len(cues)
    for caption, cue in zip(captions, cues):
        stamps = [webvtt_seconds(stamp) for stamp in re.findall(r"<(\d\d:\d\d:\d\d\.\d{3})>", caption.raw_text)]
        assert len(stamps) == len(cue.words) - 1  # every word but the first, which starts the cue
        assert stamps == sorted(stamps) and all(cue.start <= stamp <= cue.end for stamp in stamps)
        assert re.sub(r"<[^>]+>", "", caption.raw_text) == cue.text
    dialogue = [
        line.split(",,", 2)[-1]
        for line in render(composition_transcript, "ass", word_highlight=True).splitlines()
        if line.startswith("Dialogue:")
    ]
    for text, cue in zip(dialogue, cues, strict=True):
        syllables = [int(k) for k in re.findall(r"\{\\k(\d+)\}", text)]
        assert len(syllables) in (len(cue.words), len(cue.words) + 1)  # + the wait for the first word
        assert abs(sum(syllables) / 100 - (cue.words[-1].end - cue.start)) <= 0.01 * len(syllables)
        assert re.sub(r"\{[^}]*\}", "", text).replace("\\N", "\n") == cue.text


def webvtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_cues_are_given_as_units_finish(two_workers, composition):
    shown = []
    transcript = transcribe_file(composition[0], two_workers, TranscribeOptions(batch_size=1), on_cues=shown.append)
    assert len(shown) >= 2  # its three units come in three batches, some at once
    assert [len(cues) for cues in shown] == sorted(len(cues) for cues in shown) and 0 < len(shown[0]) < len(shown[-1])
    assert [cue.text for cue in shown[-1]] == [cue.text for cue in transcript.cues]


def test_units_never_cut_speech_and_fit_whisper_window(composition):
    audio = load_audio(composition[0])
    units = split_audio(audio)
    assert all(unit.duration <= 30.0 for unit in units)
    # What the spans leave out of each sentence is silence (the pauses between its clauses): no speech.
    _path, placed = composition
    spans = sorted(span for unit in units for span in unit.spans)
    left_out = [(0.0, spans[0][0])] + [(end, start) for (_, end), (start, _) in zip(spans, spans[1:])]
    for start, end in left_out:
        for sentence in placed:
            cut = audio[int(max(start, sentence.start) * SAMPLE_RATE) : int(min(end, sentence.end) * SAMPLE_RATE)]
            assert np.abs(cut).max(initial=0) < 0.02, (start, end, sentence)


def test_short_utterance_is_kept_and_silence_gives_no_units():
    yes, _ = speech.compose([speech.silence(2.0), "Yes.", speech.silence(2.0)])
    assert [len(unit.spans) for unit in split_audio(yes)] == [1]
    assert split_audio(speech.silence(20.0)) == []
    assert split_audio(speech.tone(10.0)) == []


@pytest.fixture(scope="module")
def long_audio_and_silero_spans(composition):
    """About 7.5 minutes (the composition four times) and the silero-vad package's own spans for it."""
    audio = np.tile(load_audio(composition[0]), 4)
    return audio, silero_spans(audio)


# With the default, the VAD runs on stretches of 1, 4 and 2.5 minutes in parallel; with 1, every
# decoded minute is its own stretch, often too short to forget its fresh start, so that the next
# stretch has to start again from the true end state (both paths were seen taken).
@pytest.mark.parametrize("stretch_frames", [vad_splitter.STRETCH_FRAMES, 1])
def test_vad_finds_the_same_spans_as_silero_itself(long_audio_and_silero_spans, stretch_frames, monkeypatch):
    monkeypatch.setattr(vad_splitter, "STRETCH_FRAMES", stretch_frames)
    audio, reference = long_audio_and_silero_spans
    assert len(reference) > 60
    assert unit_spans(split_audio(audio)) == reference


def test_a_failing_vad_stretch_raises_instead_of_hanging(monkeypatch):
    real_run = vad_splitter._run_silero

    def run_without_memory(context, audio, state):
        if state is vad_splitter.FRESH_STATE and len(audio) > 2 * 60 * SAMPLE_RATE:  # the 4-minute stretch
            raise MemoryError("no memory left for the VAD")
        return real_run(context, audio, state)

    monkeypatch.setattr(vad_splitter, "_run_silero", run_without_memory)
    outcome: list[BaseException] = []

    def split():
        try:
            split_audio(np.zeros(6 * 60 * SAMPLE_RATE, dtype=np.float32))
        except MemoryError as error:
            outcome.append(error)

    thread = threading.Thread(target=split, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and [str(error) for error in outcome] == ["no memory left for the VAD"]


def test_a_long_pause_ends_a_unit_where_each_units_language_is_detected():
    audio, placed = speech.compose(
        [
            speech.silence(0.5),
            "It is late.",
            speech.silence(0.4),
            "We should go home.",
            speech.silence(2.0),
            "The museum is closed on Mondays.",
            speech.silence(0.5),
        ]
    )
    blocks = [audio[start : start + BLOCK_SAMPLES] for start in range(0, len(audio), BLOCK_SAMPLES)]
    assert [len(unit.spans) for unit in stream_units(iter(blocks))] == [3]  # a window filled with speech
    apart = list(stream_units(iter(blocks), new_unit_after_pause_s=1.5))
    assert [len(unit.spans) for unit in apart] == [2, 1]
    assert apart[1].spans[0][0] > placed[1].end + 1.0  # cut in the long pause, not within the short one


def test_long_speech_without_pauses_is_split_below_the_window():
    # 80 s of speech, pauses only 0.15 s long: shorter than the VAD's minimum silence.
    pieces = []
    for sentence in speech.SENTENCES * 2:
        pieces += [sentence, speech.silence(0.15)]
    audio, _ = speech.compose(pieces)
    units = split_audio(audio, VadOptions())
    assert len(units) >= 3
    assert all(unit.duration <= 30.0 for unit in units)
    spoken = sum(end - start for unit in units for start, end in unit.spans)
    assert spoken >= 0.9 * len(audio) / SAMPLE_RATE


def test_a_full_unit_ends_at_the_longest_pause_in_its_last_quarter():
    # Sentences 0.5 s apart, and one pause of 1.5 s after the sentence that ends past 24 s.
    lengths = np.cumsum([len(speech.speak(sentence)) / SAMPLE_RATE + 0.5 for sentence in speech.SENTENCES])
    long_after = int(np.argmax(lengths >= 24))
    pieces = []
    for index, sentence in enumerate(speech.SENTENCES):
        pieces += [sentence, speech.silence(1.5 if index == long_after else 0.5)]
    audio, placed = speech.compose(pieces)
    long_pause = next(later.start for earlier, later in zip(placed, placed[1:]) if later.start - earlier.end > 1.0)
    units = split_audio(audio, VadOptions())
    assert units[0].duration >= vad_splitter.MIN_UNIT_FILL * 30
    assert abs(units[0].spans[-1][1] - (long_pause - 1.5)) < 0.5  # not just before the span that did not fit
    assert abs(units[1].spans[0][0] - long_pause) < 0.5


def test_cli_writes_srt_for_jfk(jfk, tmp_path):
    out = tmp_path / "jfk.srt"
    result = run_cli(jfk[0], "-o", out, "--devices", "cpu*2")
    assert result.returncode == 0, result.stderr
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert word_error_rate(jfk[1], " ".join(c.content for c in srt.parse(raw.decode("utf-8")))) <= 0.10
    assert "model loaded" in result.stderr


def test_cli_word_highlight_writes_karaoke_ass(jfk, tmp_path):
    out = tmp_path / "jfk.ass"
    result = run_cli(jfk[0], "-o", out, "--word-highlight", "--devices", "cpu")
    assert result.returncode == 0, result.stderr
    events = pysubs2.load(str(out))
    assert events.styles["Default"].secondarycolor != events.styles["Default"].primarycolor  # words not yet sung
    assert all(r"{\k" in event.text for event in events)
    assert word_error_rate(jfk[1], " ".join(event.plaintext for event in events)) <= 0.10


def test_cli_several_inputs_into_a_folder_in_vtt(jfk, composition, tmp_path):
    result = run_cli(jfk[0], composition[0], "-o", tmp_path / "subs", "--format", "vtt", "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "subs").iterdir()) == ["composition.vtt", "jfk.vtt"]
    assert result.stderr == ""


def make_bad_inputs(folder, ffmpeg):
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    text = folder / "notes.mp3"
    text.write_text("this is not audio\n")
    full, truncated = folder / "full.mp3", folder / "truncated.mp3"
    tone = speech.write_wav(folder / "tone.wav", np.tile(speech.tone(1.0), 20))
    make_media(ffmpeg, "-i", str(tone), "-c:a", "libmp3lame", "-b:a", "64k", str(full))
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    video = folder / "silent-film.mp4"
    make_media(ffmpeg, "-f", "lavfi", "-i", "testsrc=duration=1:size=64x64:rate=10", "-c:v", "mpeg4", "-an", str(video))
    short = speech.write_wav(folder / "blip.wav", speech.tone(0.1))
    return {
        empty: "the file is empty",
        text: "not a readable audio or video file",
        truncated: "truncated or damaged",
        video: "has no audio stream",
        short: "only 0.10 s long",
        folder / "missing.wav": "no such file",
    }


def test_cli_bad_inputs_exit_2_with_their_own_message(tmp_path, ffmpeg):
    cases = make_bad_inputs(tmp_path, ffmpeg)
    for path, message in cases.items():
        result = run_cli(path, "-o", tmp_path / "out.srt", "--quiet")
        assert result.returncode == 2, (path, result.stderr)
        assert message in result.stderr and path.name in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_cli_checks_inputs_and_options_before_loading_a_model(jfk, tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n")
    cases = {
        "no such file": [tmp_path / "missing.wav"],
        "not a readable audio or video file": [text],
        "unknown language 'xx'": [jfk[0], "--language", "xx"],
        "ends in .srt but --format is vtt": [jfk[0], "-o", tmp_path / "out.srt", "--format", "vtt"],
        "no NVIDIA GPU found for cuda:0; use --devices cpu": [jfk[0], "--devices", "cuda:0"],
        "--word-highlight needs ASS or WebVTT, not srt": [jfk[0], "-o", tmp_path / "out.srt", "--word-highlight"],
    }
    for message, args in cases.items():
        result = run_cli(*args, "--devices", "cpu") if "--devices" not in args else run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "model loaded" not in result.stderr
    assert not (tmp_path / "out.srt").exists()


def test_cli_prints_each_log_line_once_and_units_only_when_asked(jfk, tmp_path):
    def lines(*extra):
        result = run_cli(jfk[0], "-o", tmp_path / "out.srt", "--devices", "cpu*2", *extra)
        assert result.returncode == 0, result.stderr
        # The bar redraws itself with carriage returns; log lines end with a newline of their own.
        bars = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("jfk.flac: ")]
        assert bars[0] == "jfk.flac: decoding and finding speech" and not any("0/0 s" in bar for bar in bars), bars
        assert any(re.search(r" 100%\|.*\| 11/11 s$", bar) for bar in bars), bars  # to the end, in the file's seconds
        return [line for line in result.stderr.replace("\r", "\n").splitlines() if not line.startswith("jfk.flac: ")]

    normal = lines()
    assert sum("model loaded" in line for line in normal) == 2 and sum("job 1 done" in line for line in normal) == 1
    assert not any("] unit 0 (" in line for line in normal)
    assert sum("] unit 0 (" in line for line in lines("--verbose")) == 1


def test_cli_help_has_examples():
    result = run_cli("--help")
    assert (
        result.returncode == 0
        and "examples:" in result.stdout
        and "python cli.py talk.mp4 -o talk.srt" in result.stdout
    )


def test_the_benchmark_starts():
    """bench/bench.py is run on purpose, not in CI: this keeps it importable as the modules move."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "--timing" in result.stdout and "--paced-engine" in result.stdout, result.stderr


def test_the_paced_engine_prices_a_batch_as_a_gpu_runs_it():
    """The benchmark's stand-in for a GPU: a batch of 32 costs 32 windows' time, a window alone 2.7
    times as much (the GPU kit's 259 against 702 x realtime), and a larger batch never less than a smaller."""
    loader = importlib.util.spec_from_file_location("bench", ROOT / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(bench)
    seconds = [bench.paced_batch_seconds(size, 0.05) for size in range(1, 100)]
    assert seconds[31] == pytest.approx(32 * 0.05) and seconds[0] == pytest.approx(0.05 * 702 / 259)
    assert seconds == sorted(seconds)
    per_window = [batch / size for size, batch in enumerate(seconds[:32], start=1)]
    assert per_window == sorted(per_window, reverse=True)


def test_cli_bad_option_and_unknown_model_exit_2(jfk):
    result = run_cli(jfk[0], "--model", "no-such-model", "--quiet")
    assert result.returncode == 2 and "unknown model 'no-such-model'" in result.stderr
    result = run_cli(jfk[0], "--devices", "gpu7", "--quiet")
    assert result.returncode == 2 and "unknown device" in result.stderr
    result = run_cli(jfk[0], "--task", "translate", "--quiet")
    assert result.returncode == 2 and "cannot translate" in result.stderr
    # A repo id that is not in the cache, with the hub out of reach (offline mode: no network is tried).
    result = run_cli(jfk[0], "--model", "nobody/no-such-model", "--quiet", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "could not be downloaded" in result.stderr and "--download-only" in result.stderr


def test_music_between_sentences_gives_no_cue_and_cues_start_at_sentences(two_workers, tmp_path):
    audio, placed = speech.compose(
        [
            speech.silence(1.0),
            speech.SENTENCES[0],
            speech.silence(0.5),
            speech.music(8.0),
            speech.silence(0.5),
            speech.SENTENCES[1],
            speech.silence(0.8),
            speech.SENTENCES[2],
            speech.silence(1.0),
        ]
    )
    transcript = transcribe_file(speech.write_wav(tmp_path / "music.wav", audio), two_workers)
    first, second, third = placed
    for cue in transcript.cues:
        assert cue.end <= first.end + 0.5 or cue.start >= second.start - 0.5, cue  # nothing over the music
    starts = [cue.start for cue in transcript.cues]
    for sentence in placed:  # a cue begins where each sentence begins
        assert any(abs(start - sentence.start) <= 0.5 for start in starts), (sentence, starts)
    assert word_error_rate(" ".join(s.text for s in placed), " ".join(c.text for c in transcript.cues)) <= 0.15

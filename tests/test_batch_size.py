"""Choosing how many 30-s windows a worker transcribes at once, from its model and free memory."""

import struct

import pytest

from models import (
    MAX_BATCH_SIZE,
    ModelDimensions,
    choose_batch_size,
    free_memory,
    memory_per_window,
    model_dimensions,
    parse_batch_size,
    resolve_model,
)

GIB = 2**30


def write_model_header(path, variables, version=6):
    """A CTranslate2 model.bin holding `variables`: name -> (shape, int16 value or None)."""

    def text(value: str) -> bytes:
        return struct.pack("H", len(value) + 1) + value.encode() + b"\0"

    body = struct.pack("I", version) + text("WhisperSpec") + struct.pack("I", 3) + struct.pack("I", len(variables))
    for name, (shape, value) in variables.items():
        data = struct.pack("h", value) if value is not None else bytes(2 * shape[0])
        body += text(name) + struct.pack("B", len(shape)) + struct.pack(f"{len(shape)}I", *shape)
        body += struct.pack("B", 2) + struct.pack("I", len(data)) + data
    (path / "model.bin").write_bytes(body + struct.pack("I", 0))


def test_dimensions_of_the_bundled_tiny_model():
    assert model_dimensions(resolve_model("tiny.en")) == ModelDimensions(width=384, heads=6, decoder_layers=4)


def test_dimensions_of_a_large_v3_turbo_header(tmp_path):
    variables = {"encoder/conv1/bias": ((1280,), None), "encoder/num_heads": ((), 20)}
    for layer in range(32):
        variables[f"encoder/layer_{layer}/ffn/linear_0/bias"] = ((8,), None)
    for layer in range(4):
        variables[f"decoder/layer_{layer}/ffn/linear_0/bias"] = ((8,), None)
    variables["decoder/layer_norm/gamma"] = ((8,), None)  # a "layer_" name that is not a layer
    write_model_header(tmp_path, dict(sorted(variables.items())))
    assert model_dimensions(str(tmp_path)) == ModelDimensions(width=1280, heads=20, decoder_layers=4)


def test_a_model_file_of_another_format_is_refused_not_misread(tmp_path):
    write_model_header(tmp_path, {"encoder/conv1/bias": ((1280,), None)}, version=5)
    with pytest.raises(ValueError, match="format 5"):
        model_dimensions(str(tmp_path))


TURBO = ModelDimensions(width=1280, heads=20, decoder_layers=4)
LARGE_V3 = ModelDimensions(width=1280, heads=20, decoder_layers=32)


def test_bigger_models_beams_and_values_need_more_memory_per_window():
    turbo = memory_per_window(TURBO, beam_size=5, value_bytes=2)
    assert 0.2 * GIB < turbo < 1 * GIB
    assert memory_per_window(LARGE_V3, 5, 2) > 3 * turbo  # 32 decoder layers keep keys and values, not 4
    assert memory_per_window(TURBO, 1, 2) < turbo
    assert memory_per_window(TURBO, 5, 4) == 2 * turbo


def test_batch_size_fits_the_free_memory_within_the_caps():
    turbo = memory_per_window(TURBO, 5, 2)
    assert choose_batch_size(130 * GIB, turbo, "cuda") == MAX_BATCH_SIZE["cuda"]  # an H200 after loading
    small = choose_batch_size(8 * GIB - 3 * GIB, memory_per_window(LARGE_V3, 5, 2), "cuda")  # an 8-GB card
    assert 1 <= small <= 4 and small * memory_per_window(LARGE_V3, 5, 2) <= 0.8 * 5 * GIB
    assert choose_batch_size(100 * 2**20, turbo, "cuda") == 1  # never less than one window
    assert choose_batch_size(64 * GIB, turbo, "cpu") == MAX_BATCH_SIZE["cpu"]


def test_free_memory_of_this_machine_is_read():
    assert free_memory("cpu") > 0


@pytest.mark.parametrize("text, expected", [("auto", None), ("1", 1), ("24", 24), (" 8 ", 8)])
def test_batch_size_setting(text, expected):
    assert parse_batch_size(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "big", ""])
def test_bad_batch_size_settings_are_refused(text):
    with pytest.raises(ValueError, match="batch size must be auto or a whole number"):
        parse_batch_size(text)


def test_workers_sharing_a_device_each_fit_their_share_of_its_memory(tmp_path):
    import models

    alone = models.fitting_batch_size(models.resolve_model("tiny.en"), "cpu", "int8", 5)
    halves = [
        models.fitting_batch_size(models.resolve_model("tiny.en"), "cpu", "int8", 5, workers) for workers in (2, 1000)
    ]
    assert alone >= halves[0] >= halves[1] == 1  # a thousandth of this machine's memory fits one window

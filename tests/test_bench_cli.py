"""`python -m tfsacnn.bench`: bad flags are one `error: <arg>: <problem>` line, exit code 2."""
import pytest

import tfsacnn.bench as bench


def _fails(argv, capsys):
    """Run the CLI in-process; -> its single stderr line (asserts exit code 2)."""
    try:
        rc = bench.main(argv)
    except SystemExit as e:   # argparse usage errors
        rc = e.code
    captured = capsys.readouterr()
    assert rc == 2, (argv, captured)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("argv,phrase", [
    (["train", "--neurons", "0"], "--neurons: must be >= 1, got 0"),
    (["train", "--batch-size", "-1"], "--batch-size: must be >= 1, got -1"),
    (["train", "--steps", "x"], "--steps: expected an integer, got 'x'"),
    (["train", "--warmup", "-1"], "--warmup: must be >= 0"),
    (["data", "--examples", "0"], "--examples: must be >= 1"),
    (["data", "--shard-size", "0"], "--shard-size: must be >= 1"),
    (["data", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["data", "--size", "0"], "--size: must be >= 1"),
    (["data", "--neurons", "-3"], "--neurons: must be >= 1"),
    (["insilico", "--neurons", "0"], "--neurons: must be >= 1"),
    (["insilico", "--model", "ff_sacnn"], "--model: unknown model 'ff_sacnn'"),
    (["insilico", "--mei-steps", "-1"], "--mei-steps: must be >= 0"),
])
def test_bad_numbers_are_one_line(argv, phrase, capsys):
    assert phrase in _fails(argv, capsys)


def test_unknown_model_is_one_line(capsys):
    from tfsacnn import models

    line = _fails(["train", "--model", "ff_sacnn", "--steps", "1", "--warmup", "0"], capsys)
    assert line.startswith("error: --model: unknown model 'ff_sacnn'")
    assert all(name in line for name in models.names())


def test_device_gpu_without_gpu_is_one_line(capsys, monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    line = _fails(["train", "--device", "gpu", "--neurons", "1", "--steps", "1"], capsys)
    assert line == "error: --device gpu: no GPU visible to TensorFlow"

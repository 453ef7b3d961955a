"""The pre-registered study's whole pipeline (sites, training, causal surround scores,
report) under JAX without TensorFlow, as `paper_scale_gpu.sh` runs it on a GPU machine."""
import json
import sys


def test_tiny_study_runs_without_tensorflow(tmp_path):
    from studies.sa_vs_cnn import experiment
    from tests.test_experiment import SA_VS_CNN, TINY

    argv = [str(SA_VS_CNN), "--out", str(tmp_path / "work"), "--results", str(tmp_path / "results"),
            *[x for s in TINY for x in ("--set", s)]]
    assert experiment.main(argv) == 0                  # the units (val only)
    assert experiment.main(argv + ["--final"]) == 0    # the sealed step
    assert "tensorflow" not in sys.modules
    summary = json.loads((tmp_path / "results" / "final" / "summary.json").read_text())
    assert summary["split"] == "test" and len(summary["hypotheses"]) == 4

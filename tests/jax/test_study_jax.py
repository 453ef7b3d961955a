"""The pre-registered study's whole pipeline (sites, training, causal surround scores,
report) under JAX without TensorFlow, as `paper_scale_gpu.sh` runs it on a GPU machine."""
import json
import sys


def test_tiny_study_runs_without_tensorflow(tmp_path):
    from studies.sa_vs_cnn import experiment
    from tests.test_experiment import SA_VS_CNN, TINY

    out = tmp_path / "study"
    assert experiment.main([str(SA_VS_CNN), "--out", str(out),
                            *[x for s in TINY for x in ("--set", s)]]) == 0
    assert "tensorflow" not in sys.modules
    summary = json.loads((out / "summary.json").read_text())
    assert summary and (out / "table.md").read_text().count("| ff_sa_cnn vs ff_cnn |") > 0

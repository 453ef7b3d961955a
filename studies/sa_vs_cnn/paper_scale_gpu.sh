#!/usr/bin/env bash
# The full pre-registered study (studies/sa_vs_cnn/sa_vs_cnn_gpu.yaml) on a GPU machine,
# with tfsacnn's own trainer under JAX (the GPU machines have JAX and no TensorFlow).
# From the repository root:
#
#   bash studies/sa_vs_cnn/paper_scale_gpu.sh OUT             # e.g. runs/sa_vs_cnn_gpu
#   CONFIG=studies/sa_vs_cnn/sa_vs_cnn.yaml bash studies/sa_vs_cnn/paper_scale_gpu.sh OUT   # the CPU version
#
# The experiment reuses finished sites and runs, so a call cut short (a device time limit)
# continues where it stopped when called again with the same OUT; it refuses an OUT that
# holds another experiment. It first prints the study's size (--plan).
# Needs: the sites are written as TFRecords by data_prep.writer, and the report reads them
# (tfsacnn.data.load_numpy) and scores the test split; where TensorFlow is missing, those
# steps must have a TensorFlow-free path (see the study README, "Status").
set -euo pipefail
out=${1:?usage: bash studies/sa_vs_cnn/paper_scale_gpu.sh OUT}
config=${CONFIG:-studies/sa_vs_cnn/sa_vs_cnn_gpu.yaml}
py=${PYTHON:-python3}
mkdir -p "$(dirname "$out")"
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
"$py" -m studies.sa_vs_cnn.experiment "$config" --out "$out" --plan
"$py" -m studies.sa_vs_cnn.experiment "$config" --out "$out" 2>&1 | tee -a "$out.log"

#!/usr/bin/env bash
# The CPU figures of docs/speed.md (2 cores, batch 50: bench train's default). Each line
# is one JSON record; ratios are against baselines timed in the same run.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
# independent core vs the paper's PyTorch per-neuron loop, timed in the same run
python -m tfsacnn.bench train --model ff_sa_cnn --neurons 32 --steps 20 --baseline torch
# shared core at the same 32 neurons
python -m tfsacnn.bench train --model ff_sa_cnn --neurons 32 --steps 20 --core shared
# bf16 compute (weights stay float32)
python -m tfsacnn.bench train --model ff_sa_cnn --neurons 32 --steps 20 --precision mixed_bfloat16
# memory vs neurons (peak RSS of one process per size)
for n in 8 16 32 64; do
  python -m tfsacnn.bench train --model ff_sa_cnn --neurons "$n" --steps 5
done

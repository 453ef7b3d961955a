#!/usr/bin/env bash
# Paper-scale training speed on one GPU: a whole site (300 neurons, independent core,
# ff_sa_cnn, batch 50), timed over 60 steps after warm-up and extrapolated to 34k images
# x 50 epochs (target: under 30 minutes on one H100). Run from the repository root on the
# GPU machine, after `pip install -e '.[gpu]'` (or tensorflow[and-cuda]==2.21.0).
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for impl in grouped map; do
  python -m tfsacnn.bench train --device gpu --model ff_sa_cnn --neurons 300 --batch 50 \
      --steps 60 --warmup 5 --conv-implementation "$impl" --site-images 34000 --site-epochs 50
done
python -m tfsacnn.bench train --device gpu --model ff_sa_cnn --neurons 300 --batch 50 \
    --steps 60 --warmup 5 --core shared

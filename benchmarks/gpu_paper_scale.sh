#!/usr/bin/env bash
# The paper's scale on one GPU, trained by tfsacnn itself under KERAS_BACKEND=jax, as one
# prepared call on a machine with CUDA, JAX and PyTorch but no TensorFlow.
#
#   bash benchmarks/gpu_paper_scale.sh prepare    # here: .whl/ = tfsacnn + keras, namex, optree
#   bash benchmarks/gpu_paper_scale.sh run        # there, from the repository root (OUT=dir)
#
# `run` installs the wheels in /tmp/site (--no-deps), synthesises the site (seed SEED,
# NEURONS neurons, half with a surround), trains ff_cnn and ff_sa_cnn side by side with
# `python -m tfsacnn.fit` (independent core, EPOCHS epochs, each stopping at an epoch
# boundary before TIME_LIMIT_S), times `tfsacnn.bench train` under JAX against the paper's
# per-neuron PyTorch loop on the same GPU, and leaves in $OUT: runs.tgz (config, metrics,
# model.keras of each run), bench.json and log.txt. Scoring here:
#   tar xzf runs.tgz && tfsacnn export --run runs/ff_sa_cnn --data <the same site, made here>
#   tfsacnn compare runs/ff_cnn runs/ff_sa_cnn --split test
# Toy size on a CPU, in the installed environment (checks the whole path in about a minute):
#   INSTALL_WHEELS=0 NEURONS=2 TRAIN=200 VAL=100 TEST=100 EPOCHS=1 BENCH_NEURONS=2 \
#     BENCH_STEPS=2 OUT=/tmp/gpu_out bash benchmarks/gpu_paper_scale.sh run
# On the device (one call; .whl carried):  bash benchmarks/gpu_paper_scale.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=.whl
if [ "${1:-}" = prepare ]; then
  rm -rf "$WHL" && mkdir -p "$WHL"
  python -m pip wheel -q --no-deps --no-build-isolation -w "$WHL" .
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$WHL" keras==3.15.1 namex==0.1.0 'optree==0.17.0'
  ls -la "$WHL"
  exit 0
fi
[ "${1:-}" = run ] || { echo "usage: $0 prepare|run" >&2; exit 2; }
OUT=${OUT:-/tmp/gpu_out}; WORK=${WORK:-/tmp/paper_scale}
NEURONS=${NEURONS:-24} TRAIN=${TRAIN:-32000} VAL=${VAL:-1000} TEST=${TEST:-1000}
EPOCHS=${EPOCHS:-50} SEED=${SEED:-0} TIME_LIMIT_S=${TIME_LIMIT_S:-420}
BENCH_NEURONS=${BENCH_NEURONS:-64} BENCH_STEPS=${BENCH_STEPS:-30}
mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK"
exec > >(tee "$OUT/log.txt") 2>&1
if [ "${INSTALL_WHEELS:-1}" = 1 ] && ls "$WHL"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$WHL"/*.whl
  export PYTHONPATH=/tmp/site
fi
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 PYTHONUNBUFFERED=1
python3 -c "import jax, keras, tfsacnn; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
t0=$(date +%s)
python3 -m data_prep.synthesize --out "$WORK/site" --neurons "$NEURONS" --train "$TRAIN" \
    --val "$VAL" --test "$TEST" --repeats 10 --seed "$SEED" --surround-fraction 0.5 --quiet
echo "site: $(( $(date +%s) - t0 )) s"
pids=()
for model in ff_cnn ff_sa_cnn; do
  python3 -m tfsacnn.fit --config "$model" --data "$WORK/site" --out "$WORK/runs/$model" \
      --set train.epochs="$EPOCHS" --set train.time_limit_s="$TIME_LIMIT_S" \
      --set train.neurons_per_step=0 --set eval.tuning_curve_neurons=0 \
      > "$OUT/fit_$model.txt" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 4 "$OUT"/fit_*.txt
echo "training: $(( $(date +%s) - t0 )) s since start"
(cd "$WORK" && tar czf "$OUT/runs.tgz" runs/*/config.yaml runs/*/metrics.json \
    runs/*/metrics.csv runs/*/model.keras) || status=1
python3 -m tfsacnn.bench train --model ff_sa_cnn --neurons "$BENCH_NEURONS" --batch-size 50 \
    --steps "$BENCH_STEPS" --baseline torch --site-images 34000 --site-epochs 50 \
    --site-neurons 300 | tee "$OUT/bench.json" || status=1
echo "total: $(( $(date +%s) - t0 )) s"
exit $status

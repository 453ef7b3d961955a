#!/usr/bin/env bash
# The prepared GPU call: the speed bench against the paper's PyTorch loop on the same GPU,
# the per-neuron conv trial, then the pre-registered SA-vs-CNN study's units until a time
# limit. For a machine with CUDA, JAX and PyTorch but no TensorFlow (and no network).
#
#   bash benchmarks/gpu_paper_scale.sh prepare   # here: .whl/ = the tfsacnn wheel, Keras
#                                                # 3.15.1 and its missing needs (Python 3.12)
#   bash benchmarks/gpu_paper_scale.sh run       # there, from the repository root, .whl carried
#
# `run` (one call, TIME_LIMIT_S = 500 s in all by default):
#   1. installs .whl/*.whl non-editable into /tmp/site (--no-deps, PYTHONPATH); run from the
#      repository root, the checkout's tfsacnn/ and its configs/ are what imports;
#   2. `tfsacnn.bench train --device gpu --baseline torch` under KERAS_BACKEND=jax: tfsacnn
#      and the per-neuron PyTorch loop on the same GPU, the devices named and the 300-neuron
#      site projected (-> $OUT/bench.json); a side on a CPU fails the call here;
#   3. `tfsacnn.bench conv`: the faster per-neuron conv on this device (-> $OUT/conv.json),
#      $OUT/conv.env exported as TFSACNN_CONV_IMPLEMENTATION for what follows; its rate (CONV_NEURONS
#      neurons, the study's per site) is the runner's --rate for its first unit's estimate;
#   4. the study's units in their registered order, each skipped when RESULTS/<unit>.json
#      exists, none started that would not finish before the time limit:
#        python -m studies.sa_vs_cnn.experiment CONFIG --out WORK --results RESULTS \
#            --time-limit-s S
#   5. $OUT/results.tgz (every unit record <unit>.json and its sealed test predictions
#      <unit>.sealed.npz, which --final scores without the weights; extracting at the
#      repository root into studies/sa_vs_cnn/results/gpu/) and $OUT/log.txt.
# Resuming: `tar xzf results.tgz` at the repository root and commit both files of each unit; the
# next call (or session) skips those units. SKIP_BENCH=1 skips step 2.
# Settings (environment): CONFIG (studies/sa_vs_cnn/sa_vs_cnn_gpu.yaml), RESULTS
# (studies/sa_vs_cnn/results/gpu), WORK (/tmp/sa_vs_cnn_gpu), OUT (/tmp/gpu_out),
# DEVICE (gpu; cpu for the toy run), TIME_LIMIT_S, BENCH_NEURONS (64), BENCH_STEPS (20),
# CONV_NEURONS (12), CONV_STEPS (5), BATCH (50: images per bench step), BASELINE (torch | none), PYTHON (python3), WHL (.whl),
# SITE (/tmp/site: where the wheels are installed), INSTALL_WHEELS (1).
# Toy size on a CPU (tests/test_device_script.py runs this with the wheel installed):
#   DEVICE=cpu CONFIG=tiny.yaml RESULTS=/tmp/r BENCH_NEURONS=1 BENCH_STEPS=1 CONV_NEURONS=2 CONV_STEPS=1 BATCH=4 \
#     OUT=/tmp/gpu_out bash benchmarks/gpu_paper_scale.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=${WHL:-.whl}
PY=${PYTHON:-python3}
if [ "${1:-}" = prepare ]; then
  rm -rf "$WHL" && mkdir -p "$WHL"
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHL" .
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$WHL" keras==3.15.1 namex==0.1.0 optree==0.17.0
  # the commit the units record (the device's copy has no git history)
  commit=$(git rev-parse HEAD)
  [ -z "$(git status --porcelain --untracked-files=no)" ] || commit="$commit-dirty"
  echo "$commit" > "$WHL/COMMIT"
  ls -la "$WHL"
  exit 0
fi
[ "${1:-}" = run ] || { echo "usage: $0 prepare|run" >&2; exit 2; }
start=$(date +%s)
OUT=${OUT:-/tmp/gpu_out} WORK=${WORK:-/tmp/sa_vs_cnn_gpu}
CONFIG=${CONFIG:-studies/sa_vs_cnn/sa_vs_cnn_gpu.yaml}
RESULTS=${RESULTS:-studies/sa_vs_cnn/results/gpu}
DEVICE=${DEVICE:-gpu} TIME_LIMIT_S=${TIME_LIMIT_S:-500} BASELINE=${BASELINE:-torch}
BENCH_NEURONS=${BENCH_NEURONS:-64} BENCH_STEPS=${BENCH_STEPS:-20}
CONV_NEURONS=${CONV_NEURONS:-12} CONV_STEPS=${CONV_STEPS:-5} BATCH=${BATCH:-50}
SITE=${SITE:-/tmp/site}
rate=""
ARCHIVED=studies/sa_vs_cnn/results/gpu     # where results.tgz extracts, at the repository root
mkdir -p "$OUT" "$WORK" "$RESULTS"
exec > >(tee "$OUT/log.txt") 2>&1
if [ "${INSTALL_WHEELS:-1}" = 1 ]; then
  ls "$WHL"/*.whl >/dev/null 2>&1 || { echo "error: $WHL: no wheels (run prepare first)"; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHL"/*.whl
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${TFSACNN_COMMIT:-}" ] && [ -f "$WHL/COMMIT" ]; then
  export TFSACNN_COMMIT=$(cat "$WHL/COMMIT")
fi
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 PYTHONUNBUFFERED=1 \
       TF_CPP_MIN_LOG_LEVEL=2
"$PY" -c "import jax, keras, tfsacnn.config as c; print('jax', jax.__version__, jax.devices(), \
'keras', keras.__version__, 'configs', len(c.shipped()), 'commit', '${TFSACNN_COMMIT:-git}')"

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  "$PY" -m tfsacnn.bench train --model ff_sa_cnn --device "$DEVICE" --baseline "$BASELINE" \
      --neurons "$BENCH_NEURONS" --batch-size "$BATCH" --steps "$BENCH_STEPS" --site-images 34000 \
      --site-epochs 50 --site-neurons 300 > "$OUT/bench.json" \
    || { echo "error: the bench failed (above); no unit was run"; exit 1; }
  cat "$OUT/bench.json"
fi
if "$PY" -m tfsacnn.bench conv --model ff_sa_cnn --device "$DEVICE" --neurons "$CONV_NEURONS" \
    --steps "$CONV_STEPS" --batch-size "$BATCH" --env-file "$OUT/conv.env" > "$OUT/conv.json"; then
  cat "$OUT/conv.json"
  set -a; . "$OUT/conv.env"; set +a
  rate=$("$PY" -c "import json, sys; print(max(json.load(sys.stdin)['neuron_images_per_s'].values()))" \
         < "$OUT/conv.json")
  echo "per-neuron conv: $TFSACNN_CONV_IMPLEMENTATION (the faster in the trial, $rate neuron-images/s)"
else
  echo "the conv trial failed (above): NeuronConv2D's default (grouped on a GPU) is used"
fi

left=$(( start + TIME_LIMIT_S - $(date +%s) - 15 ))     # 15 s for the archive
status=0
if [ "$left" -gt 0 ]; then
  # the first unit's time is estimated at the trial's rate (the study's neurons per site)
  "$PY" -m studies.sa_vs_cnn.experiment "$CONFIG" --out "$WORK" --results "$RESULTS" \
      --time-limit-s "$left" ${rate:+--rate "$rate"} || status=$?
else
  echo "no time left for a unit"
fi
units=$(cd "$RESULTS" && ls *.json 2>/dev/null || true)
sealed=$(cd "$RESULTS" && ls *.sealed.npz 2>/dev/null || true)   # the units' test predictions
if [ -n "$units" ]; then
  tar czf "$OUT/results.tgz.part" -C "$RESULTS" --transform "s,^,$ARCHIVED/," $units $sealed
  mv "$OUT/results.tgz.part" "$OUT/results.tgz"
fi
echo "units done: $(echo $units | wc -w); total $(( $(date +%s) - start )) s; status $status"
exit $status

#!/usr/bin/env bash
# One prepared call for a lent GPU machine (PyTorch, no TensorFlow): simulate the site and
# train a pair of the paper's models on it at the paper's scale, both at once, stopping at
# an epoch boundary before BUDGET_S seconds have passed. Then, on a machine with tfsacnn:
#
#   python -m studies.sa_vs_cnn.experiment studies/sa_vs_cnn/sa_vs_cnn.yaml --out runs/paper_seed$SEED \
#       --set site.seed=$SEED --set site.surround_fraction=$SURROUND --set train.epochs=$EPOCHS \
#       --set model.core=independent --set "models=[ff_cnn, ff_sa_cnn]" --set "pairs=[]" --torch OUT
#
# (same site arguments: the experiment synthesises the same site and checks it through the
# val CORR). Usage, from the repository root:
#
#   SEED=1 SURROUND=1.0 bash scripts/paper_scale_gpu.sh OUT
#
# SURROUND=1.0 makes every neuron a surround neuron: the PT question needs surround neurons
# (studies/sa_vs_cnn/README.md section 8) and site seed 0 already has the controls.
# Settings (environment): SEED 0, SURROUND 0.5, NEURONS 24, TRAIN 32000, EPOCHS 50, BUDGET_S 540,
# MODELS "ff_cnn ff_sa_cnn", PYTHON python3. Writes OUT/<model>/ (avg_0_N.pth,
# history.json) and OUT/<model>.log.
set -euo pipefail
out=${1:?usage: SEED=1 bash scripts/paper_scale_gpu.sh OUT}
seed=${SEED:-0}; surround=${SURROUND:-0.5}; neurons=${NEURONS:-24}; train=${TRAIN:-32000}; epochs=${EPOCHS:-50}
models=${MODELS:-ff_cnn ff_sa_cnn}; py=${PYTHON:-python3}
end=$(( $(date +%s) + ${BUDGET_S:-540} ))
export PYTHONUNBUFFERED=1
mkdir -p "$out"
site="$out/site_seed$seed.npz"
"$py" scripts/train_torch.py site --out "$site" --neurons "$neurons" --train "$train" \
    --val 1000 --test 1000 --seed "$seed" --surround-fraction "$surround"
pids=()
for m in $models; do
    "$py" scripts/train_torch.py train --site "$site" --model "$m" --epochs "$epochs" \
        --end-at "$end" --out "$out/$m" > "$out/$m.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
rm -f "$site"                     # 1.3 GB at the paper's scale; the experiment rebuilds it
for m in $models; do tail -n 2 "$out/$m.log"; done
exit $rc

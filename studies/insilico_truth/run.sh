#!/usr/bin/env bash
# Exploratory: does ff_sa_cnn recover the simulator's ground truth better than ff_cnn?
# One fixed-surround and one gated-surround site (12 neurons, 3000 train / 500 val images,
# no test split; seeds used by no site of studies/sa_vs_cnn); each model trained 6 epochs,
# then `tfsacnn insilico` on both and a paired comparison.
# From the repository root:  bash studies/insilico_truth/run.sh WORKDIR  (a new, empty one:
# existing sites, runs and in-silico results there are reused, whatever code made them)
set -euo pipefail
work=${1:?usage: bash studies/insilico_truth/run.sh WORKDIR}
results=${RESULTS:-studies/insilico_truth/results}
py=${PYTHON:-python}
mkdir -p "$work" "$results"
# the code that made every number: a committed, clean checkout
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain -- tfsacnn data_prep)" ]; then
  echo "error: tfsacnn/ or data_prep/ has uncommitted changes; commit first" >&2; exit 2
fi
echo "$commit" > "$results/COMMIT"
for sm in fixed gated; do
  seed=$([ "$sm" = fixed ] && echo 501 || echo 502)
  [ -d "$work/sites/$sm" ] || "$py" -m data_prep.synthesize --out "$work/sites/$sm" --neurons 12 \
      --train 3000 --val 500 --test 0 --repeats 10 --seed "$seed" --surround-model "$sm" --quiet
  for m in ff_cnn ff_sa_cnn; do
    [ -f "$work/runs/$sm/$m/metrics.json" ] || "$py" -m tfsacnn.fit --config "$m" \
        --data "$work/sites/$sm" --out "$work/runs/$sm/$m" --set train.epochs=6 --quiet --overwrite
    [ -f "$work/insilico/${sm}_$m/insilico.json" ] || "$py" -m tfsacnn.cli.main insilico \
        --run "$work/runs/$sm/$m" --out "$work/insilico/${sm}_$m" --mei-steps 300 --mei-seeds 2
  done
  "$py" -m tfsacnn.insilico.compare "$work/insilico/${sm}_ff_cnn" "$work/insilico/${sm}_ff_sa_cnn" \
      --baseline "$work/insilico/${sm}_ff_cnn" --out "$work/compare_$sm"
  mkdir -p "$results/$sm"
  cp "$work/compare_$sm"/* "$results/$sm/"
  for m in ff_cnn ff_sa_cnn; do
    cp "$work/insilico/${sm}_$m/insilico.json" "$results/$sm/insilico_$m.json"
    cp "$work/insilico/${sm}_$m/neurons.csv" "$results/$sm/neurons_$m.csv"
    cp "$work/runs/$sm/$m/metrics.json" "$results/$sm/metrics_$m.json"
  done
done

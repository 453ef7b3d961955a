"""Does a trained SA model use its attention for context? The diagnostics of studies/sa_vs_cnn/README.md.

    python studies/sa_vs_cnn/sa_diagnostics.py RUN_DIR SITE_DIR [--split test]

For the SA layer of RUN_DIR/model.keras (one attention per neuron group; a shared core has
one), on the split's images, prints one JSON object:
- `gamma`: the SA gate(s);
- `entropy_over_uniform`, `max_weight`: how selective the centre hypercolumn's attention
  row is (`tfsacnn.analyze.attention_selectivity`; 1 and 1/81 for uniform attention);
- `logit_sd`, `logit_share_from_centre_content`: the spread of the centre row's logits over
  the 81 keys, and the share of that spread's variance that depends on the centre's own
  features (the rest is the same whatever the centre shows: a "saliency" of the keys);
- `corr` and `corr_context_at_mean`, per neuron group (surround / control, from
  SITE_DIR/ground_truth.npz): CORR of the model, and CORR when the SA block's contextual
  term (gamma * attended) is replaced by its mean over the images.
"""
import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

from tfsacnn import data as data_lib, metrics, models  # noqa: E402
from tfsacnn.evaluation.analyze import attention_selectivity, load_run  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("site")
    p.add_argument("--split", default="test")
    a = p.parse_args()
    run, site = pathlib.Path(a.run), pathlib.Path(a.site)
    loaded = load_run(run)
    m, neurons = loaded["model"], loaded["neurons"]
    has = np.load(site / "ground_truth.npz")["has_surround"].astype(bool)[neurons]
    x, y = data_lib.load_numpy(site, a.split, verify=False)
    y = y[:, neurons]
    sa = m.get_layer("self_attention")
    after = m.layers[[layer.name for layer in m.layers].index("self_attention") + 1:]
    h = np.concatenate([np.asarray(models.features(m, x[i:i + 250], upto="self_attention"))
                        for i in range(0, len(x), 250)])                     # (N, 9, 9, g*C)
    delta = np.concatenate([np.asarray(sa(h[i:i + 250])) - h[i:i + 250]
                            for i in range(0, len(h), 250)])

    def predict(d):
        out = []
        for i in range(0, len(h), 250):
            z = h[i:i + 250] + d[i:i + 250]
            for layer in after:
                z = layer(z, training=False)
            out.append(np.asarray(z))
        return np.concatenate(out)

    held = np.broadcast_to(delta.mean(0, keepdims=True), delta.shape)
    c_full, c_held = metrics.corr(y, predict(delta)), metrics.corr(y, predict(held))
    _, att = sa(h[:500], return_attention=True)                  # (B, g, heads, 81, 81)
    centre = (att.shape[-1] - 1) // 2
    rows = np.asarray(att)[..., centre, :]
    # logits of the centre query, group 0 head 0: q_c . k_j, and with q_c at its mean
    g, c = sa.n_neurons, sa.channels
    hp = h[:500].reshape(len(rows), -1, g, c)[:, :, 0]
    d = sa.key_dim
    q = hp @ np.asarray(sa.query_kernel)[0][:, :d] + np.asarray(sa.query_bias)[0][:d]
    k = hp @ np.asarray(sa.key_kernel)[0][:, :d] + np.asarray(sa.key_bias)[0][:d]
    full = np.einsum("bd,bpd->bp", q[:, centre], k)
    mean_q = np.einsum("d,bpd->bp", q[:, centre].mean(0), k)
    full -= full.mean(1, keepdims=True)
    mean_q -= mean_q.mean(1, keepdims=True)
    report = {
        "run": str(run), "split": a.split, "gamma": np.asarray(sa.gamma).round(4).tolist(),
        **attention_selectivity(rows),
        "logit_sd": float(full.std(1).mean()),
        "logit_share_from_centre_content": float(((full - mean_q) ** 2).sum() / (full ** 2).sum()),
        "corr": {"surround": float(np.nanmean(c_full[has])),
                 "control": float(np.nanmean(c_full[~has]))},
        "corr_context_at_mean": {"surround": float(np.nanmean(c_held[has])),
                                 "control": float(np.nanmean(c_held[~has]))},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

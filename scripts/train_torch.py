"""Train the paper's independent networks with PyTorch, for `tfsacnn.import_torch`.

For GPU machines that have PyTorch but no TensorFlow. Each neuron gets its own network,
the reference module of its variant (the layout `tfsacnn.interop.torch_layout` reads),
trained with the paper's protocol: Adam 1e-3, MSE per neuron summed over neurons, batch
50, Dropout2d 0.3, BatchNorm eps 1e-5 / momentum 0.1. As in `tfsacnn.fit`, each neuron
keeps the epoch with its best val CORR.

The N networks run side by side as one stacked network: neuron n owns channels
n*C .. n*C+C-1 of every layer, and every layer after the first is a grouped convolution
(groups=N), so no weight, BatchNorm statistic or dropout mask is shared between neurons.
That is the same computation as N separate modules, in one kernel per layer
(tests/test_interop.py checks the exported networks against the reference modules).

    python scripts/train_torch.py site --out site.npz --neurons 24 --train 32000 \\
        --val 1000 --test 1000 --seed 0 --surround-fraction 0.5
    python scripts/train_torch.py train --site site.npz --model ff_sa_cnn --epochs 50 --out DIR
    python -m tfsacnn.import_torch --model ff_sa_cnn --pth DIR/avg_0_24.pth --out RUN
    python -m tfsacnn.evaluate --run RUN --data SITE_DIR --split test --save

`site` calls `data_prep.synthesize.generate_site` (numpy only), so the same arguments give
the site that `python -m data_prep.synthesize` writes as TFRecords. `train` writes
DIR/avg_0_N.pth (the reference's site checkpoint, `models.{i}.` keys, best epoch per
neuron) and DIR/history.json after every epoch, and stops early, at an epoch boundary,
when `--end-at` (a Unix time) would be passed by the next epoch.
"""
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfsacnn import metrics  # noqa: E402  (numpy only, like tfsacnn.errors)
from tfsacnn.errors import DataError, OneLineParser, TfsacnnError, int_at_least, run_cli  # noqa: E402

# tfsacnn.models.VARIANTS (channels, attention, beta kernel, readout); a test keeps them equal.
VARIANTS = {
    "ff_cnn": (32, None, 3, "fcl"),
    "ff_sa_cnn": (30, "value_mapping", 3, "fcl"),
    "rf_cnn": (32, None, 1, "ctl"),
    "rf_sa_cnn": (30, "identity_value", 1, "ctl"),
}
MAP = 9  # the 9x9 map after two alpha-CPBs of a 50x50 image


def build(name, n, dropout=0.3, d=5):
    """The stacked network of `n` neurons for variant `name` (a torch.nn.Module)."""
    import torch
    from torch import nn

    c, attention, k, readout = VARIANTS[name]
    nc = n * c

    class Readout(nn.Module):
        """Per-neuron Linear(f, 1): weight (n, f), bias (n,), PyTorch's Linear init."""

        def __init__(self, f):
            super().__init__()
            bound = 1 / math.sqrt(f)
            self.weight = nn.Parameter(torch.empty(n, f).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(n).uniform_(-bound, bound))

        def forward(self, x):  # (B, n, f) -> (B, n)
            return torch.einsum("bnf,nf->bn", x, self.weight) + self.bias

    class Stacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, nc, 5), nn.BatchNorm2d(nc)
            self.conv2, self.bn2 = nn.Conv2d(nc, nc, 5, groups=n), nn.BatchNorm2d(nc)
            if attention:
                self.query = nn.Conv2d(nc, n * d, 1, groups=n)
                self.key = nn.Conv2d(nc, n * d, 1, groups=n)
                if attention == "value_mapping":
                    self.value = nn.Conv2d(nc, n * d, 1, groups=n)
                    self.out = nn.Conv2d(n * d, nc, 1, groups=n)
                self.gamma = nn.Parameter(torch.zeros(n))
                self.bn_sa = nn.BatchNorm2d(nc)
            self.conv3, self.bn3 = nn.Conv2d(nc, nc, k, groups=n), nn.BatchNorm2d(nc)
            self.conv4, self.bn4 = nn.Conv2d(nc, nc, k, groups=n), nn.BatchNorm2d(nc)
            s = MAP - 2 * (k - 1)
            self.readout = Readout(c * s * s if readout == "fcl" else c)
            self.drop, self.pool = nn.Dropout2d(dropout), nn.MaxPool2d(2)

        def attend(self, x):
            """softmax_keys(q^T k) per neuron; out = gamma * (A v) + x.  (B, nc, H, W)."""
            b, _, h, w = x.shape
            q = self.query(x).view(b, n, d, h * w)
            a = torch.softmax(torch.einsum("bndp,bndq->bnpq", q, self.key(x).view(b, n, d, h * w)), -1)
            if attention == "value_mapping":
                v = self.value(x).view(b, n, d, h * w)
                o = self.out(torch.einsum("bnpq,bndq->bndp", a, v).reshape(b, n * d, h, w))
            else:
                o = torch.einsum("bnpq,bncq->bncp", a, x.view(b, n, c, h * w)).reshape(b, nc, h, w)
            return self.gamma.repeat_interleave(c).view(1, nc, 1, 1) * o + x

        def forward(self, x):  # (B, 1, 50, 50) -> (B, n)
            x = self.drop(torch.sigmoid(self.bn1(self.pool(self.conv1(x)))))
            x = self.drop(torch.sigmoid(self.bn2(self.pool(self.conv2(x)))))
            if attention:
                x = self.drop(torch.sigmoid(self.bn_sa(self.attend(x))))
            x = self.drop(torch.sigmoid(self.bn3(self.conv3(x))))
            x = torch.sigmoid(self.bn4(self.conv4(x)))
            b = x.shape[0]
            f = x.reshape(b, n, -1) if readout == "fcl" else x[:, :, MAP // 2, MAP // 2].reshape(b, n, c)
            return self.readout(f)

    return Stacked()


def reference_keys(name):
    """{stacked module name: the reference module's key prefix} for variant `name`."""
    attention, readout = VARIANTS[name][1], VARIANTS[name][3]
    seq = "a_cpbs" if attention else "layers"
    keys = {"conv1": f"{seq}.0", "bn1": f"{seq}.2", "conv2": f"{seq}.5", "bn2": f"{seq}.7"}
    if attention:
        keys.update(query="attention.query_conv", key="attention.key_conv", bn_sa="layers_sa_reg.0",
                    conv3="b_cpbs.0", bn3="b_cpbs.1", conv4="b_cpbs.4", bn4="b_cpbs.5",
                    readout=readout)  # fcl | ctl
        if attention == "value_mapping":
            keys.update(value="attention.value_conv", out="attention.o_proj")
    else:
        keys.update(conv3="layers.10", bn3="layers.11", conv4="layers.14", bn4="layers.15",
                    readout="Linear")
    return keys


def _by_neuron(t, n):
    """A stacked tensor -> (n, ...) view: neuron-major channels, or the per-neuron axis."""
    return t.reshape(n, -1, *t.shape[1:])


def site_state_dict(name, state, n):
    """Stacked state_dict -> the reference's avg_*.pth state_dict (`models.{i}.` keys)."""
    keys = reference_keys(name)
    out = {}
    for k, t in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        module, var = k.split(".", 1) if "." in k else (k, None)
        ref = "attention.gamma" if module == "gamma" else f"{keys[module]}.{var}"
        per = _by_neuron(t.detach().cpu(), n)
        for i in range(n):
            out[f"models.{i}.{ref}"] = per[i].clone()
    return out


SITE_KEYS = ("train_images", "train_responses", "val_images", "val_responses", "has_surround")


def load_site(path):
    """A `site` .npz -> {key: array}; DataError (one line, naming the file) if unusable."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            arr = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable site .npz ({type(e).__name__}: {e})") from None
    missing = [k for k in SITE_KEYS if k not in arr]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)} (write it with `train_torch.py site`)")
    n = arr["train_responses"].shape[-1]
    for split in ("train", "val"):
        x, y = arr[f"{split}_images"], arr[f"{split}_responses"]
        if x.ndim != 3 or y.ndim != 2 or len(x) != len(y) or y.shape[1] != n:
            raise DataError(f"{path}: {split} images {x.shape} and responses {y.shape} do not match "
                            f"(expected (M, S, S) and (M, {n}))")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise DataError(f"{path}: {split} images or responses hold NaN or inf")
    if arr["has_surround"].shape != (n,):
        raise DataError(f"{path}: has_surround has shape {arr['has_surround'].shape}, expected ({n},)")
    return arr


def train(site, name, epochs, out, batch=50, lr=1e-3, seed=0, end_at=None, device=None, log=print):
    """Train the stacked networks of `name` on `site` (an .npz from `site`); writes `out`."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)
    arr = load_site(site)
    x_tr = torch.from_numpy(arr["train_images"]).to(device).unsqueeze(1)   # (M, 1, S, S)
    y_tr = torch.from_numpy(arr["train_responses"]).to(device)             # (M, n)
    x_va = torch.from_numpy(arr["val_images"]).to(device).unsqueeze(1)
    surround = arr["has_surround"].astype(bool)
    m, n = y_tr.shape
    net = build(name, n).to(device)
    opt = torch.optim.Adam(net.parameters(), lr, fused=device == "cuda")
    gen = torch.Generator(device=device).manual_seed(seed)
    best = {k: v.detach().clone() for k, v in net.state_dict().items()}
    best_corr = np.full(n, -np.inf)
    best_epoch = np.zeros(n, int)
    os.makedirs(out, exist_ok=True)
    history, t_start = [], time.time()
    log(f"{name}: {n} networks, {sum(p.numel() for p in net.parameters()) // n} parameters each, "
        f"{m} train images, batch {batch}, {epochs} epochs on {device}")
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        net.train()
        perm = torch.randperm(m, device=device, generator=gen)
        total = torch.zeros((), device=device)
        for s in range(0, m, batch):
            idx = perm[s:s + batch]
            loss = ((net(x_tr[idx]) - y_tr[idx]) ** 2).mean(0).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(x_va[i:i + 500]) for i in range(0, len(x_va), 500)])
            c = metrics.corr(arr["val_responses"], pred.cpu().numpy())    # (n,); NaN never wins
            better = c > best_corr
            best_corr[better], best_epoch[better] = c[better], epoch
            mask = torch.from_numpy(better).to(device)
            for k, v in net.state_dict().items():
                if v.dim():  # every tensor but num_batches_tracked is neuron-major
                    _by_neuron(best[k], n)[mask] = _by_neuron(v, n)[mask]
        loss = float(total) / math.ceil(m / batch) / n
        if not math.isfinite(loss):
            raise TfsacnnError(f"{name}: loss is {loss} at epoch {epoch}")
        dt = time.time() - t0
        history.append({"epoch": epoch, "loss": loss, "seconds": round(dt, 2),
                        "val_corr": [round(float(v), 5) for v in c],
                        "val_corr_surround": float(c[surround].mean()) if surround.any() else None,
                        "val_corr_control": float(c[~surround].mean()) if (~surround).any() else None})
        log(f"{name} epoch {epoch}/{epochs} loss {loss:.5f} val corr {c.mean():.4f} "
            f"(surround {_fmt(history[-1]['val_corr_surround'])}, control {_fmt(history[-1]['val_corr_control'])}) "
            f"{dt:.1f} s, {m * n / dt:.0f} neuron-images/s")
        _write(out, name, n, best, history, best_epoch, best_corr, epochs)
        if end_at is not None and time.time() + dt > end_at and epoch < epochs:
            log(f"{name}: stopping after epoch {epoch} of {epochs}: the next would pass --end-at")
            break
    log(f"{name}: done in {time.time() - t_start:.0f} s")
    return net


def _fmt(v):
    return "n/a" if v is None else f"{v:.4f}"


def _write(out, name, n, best, history, best_epoch, best_corr, epochs):
    import torch

    path = os.path.join(out, f"avg_0_{n}.pth")
    torch.save(site_state_dict(name, best, n), path + ".tmp")
    os.replace(path + ".tmp", path)
    summary = {"model": name, "epochs_planned": epochs, "epochs_done": len(history),
               "best_epoch": best_epoch.tolist(),
               "best_val_corr": [round(float(v), 5) for v in best_corr],
               "history": history}
    with open(os.path.join(out, "history.json.tmp"), "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(os.path.join(out, "history.json.tmp"), os.path.join(out, "history.json"))


def write_site(out, **kw):
    """generate_site(**kw) -> one .npz of images and responses per split (+ has_surround)."""
    from data_prep.synthesize import generate_site

    site = generate_site(**kw, log=lambda msg: print(f"site: {msg}", flush=True))
    arrays = {"has_surround": site["params"]["has_surround"]}
    for split, d in site["splits"].items():
        arrays[f"{split}_images"] = d["images"]
        arrays[f"{split}_responses"] = d["responses"]
    with open(out + ".tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(out + ".tmp", out)


def main(argv=None):
    p = OneLineParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("site", help="simulate a site into one .npz (numpy only)")
    s.add_argument("--out", required=True)
    for k, v in (("neurons", 24), ("train", 32000), ("val", 1000), ("repeats", 10)):
        s.add_argument(f"--{k}", type=int_at_least(1), default=v)
    s.add_argument("--test", type=int_at_least(0), default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--surround-fraction", type=float, default=0.5)
    t = sub.add_parser("train", help="train one variant's networks on a site .npz")
    t.add_argument("--site", required=True)
    t.add_argument("--model", required=True, choices=sorted(VARIANTS))
    t.add_argument("--epochs", type=int_at_least(1), default=50)
    t.add_argument("--batch", type=int_at_least(1), default=50)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--end-at", type=float, default=None, help="Unix time: stop before passing it")
    t.add_argument("--device", default=None)
    t.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "site":
        code = run_cli(lambda: write_site(a.out, neurons=a.neurons, train=a.train, val=a.val,
                                          test=a.test, repeats=a.repeats, seed=a.seed,
                                          surround_fraction=a.surround_fraction), path=a.out)
    else:
        code = run_cli(lambda: train(a.site, a.model, a.epochs, a.out, a.batch, a.lr, a.seed,
                                     a.end_at, a.device, log=lambda msg: print(msg, flush=True)),
                       path=a.site)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()

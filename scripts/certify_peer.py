#!/usr/bin/env python3
"""certify_peer.py - randomized smoothing's CERTIFY (Cohen, Rosenfeld & Kolter 2019, section 3.2)
in plain PyTorch, to time against `gibbon certify` on the same model, images and draws.

The loop is the paper's (and its reference code's `Smooth.certify`): n0 selection draws pick the
class, n estimation draws count it, a one-sided Clopper-Pearson bound at level 1 - alpha gives
p_A's lower bound, and the radius is sigma * Phi^-1(p_A_lower) (abstain when it is <= 1/2). The
noise is torch.randn in batches of --batch rows (gibbon's is counter-based, so the two do not draw
the same numbers: radii agree statistically, not bit for bit).

Data: the first --n images of the MNIST t10k IDX files, pixels / 255, shape (N, 1, 28, 28).
Timing: time.perf_counter() around the certify calls only; torch.set_num_threads(--threads).

    source scripts/env.sh
    python scripts/certify_peer.py --model ../shared/reference/mnist_smallcnn_std.pt \
        --mnist-dir ../shared/data/mnist --sigma 0.25 --n 5 --draws 10000 --threads 1
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from scipy.stats import beta, norm


def read_idx(path):
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path = path + ".gz"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def counts(model, x, num, sigma, batch, classes):
    out = torch.zeros(classes, dtype=torch.long)
    done = 0
    with torch.no_grad():
        while done < num:
            rows = min(batch, num - done)
            noisy = x.unsqueeze(0).expand(rows, *x.shape) + torch.randn(rows, *x.shape) * sigma
            pred = model(noisy).argmax(1)
            out += torch.bincount(pred, minlength=classes)
            done += rows
    return out


def lower_confidence_bound(k, n, alpha):
    # One-sided Clopper-Pearson at level 1 - alpha (statsmodels' proportion_confint(k, n,
    # alpha=2*alpha, method="beta")[0], as the paper's code).
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def certify(model, x, sigma, n0, n, alpha, batch, classes):
    top = int(counts(model, x, n0, sigma, batch, classes).argmax())
    k = int(counts(model, x, n, sigma, batch, classes)[top])
    p_lower = lower_confidence_bound(k, n, alpha)
    if p_lower <= 0.5:
        return None, 0.0, p_lower
    return top, sigma * float(norm.ppf(p_lower)), p_lower


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="TorchScript model (.pt)")
    ap.add_argument("--mnist-dir", required=True)
    ap.add_argument("--sigma", type=float, required=True)
    ap.add_argument("--n", type=int, default=5, help="images (the first N of t10k)")
    ap.add_argument("--draws", type=int, default=100_000, help="estimation draws (the paper's n)")
    ap.add_argument("--selection-draws", type=int, default=100, help="the paper's n0")
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the JSON here (else stdout)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = torch.jit.load(a.model).eval()
    images = read_idx(os.path.join(a.mnist_dir, "t10k-images-idx3-ubyte"))[: a.n]
    labels = read_idx(os.path.join(a.mnist_dir, "t10k-labels-idx1-ubyte"))[: a.n]
    xs = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    per_sample = []
    total = 0.0
    for i in range(a.n):
        t0 = time.perf_counter()
        cls, radius, p_lower = certify(
            model, xs[i], a.sigma, a.selection_draws, a.draws, a.alpha, a.batch, 10
        )
        seconds = time.perf_counter() - t0
        total += seconds
        per_sample.append(
            {"index": i, "label": int(labels[i]), "class": cls, "radius": radius,
             "p_lower": p_lower, "seconds": seconds}
        )
    # The model's plain batched forward rate on noisy copies, for the same batch size.
    with torch.no_grad():
        noisy = xs[0].unsqueeze(0).expand(a.batch, *xs[0].shape) + torch.randn(a.batch, 1, 28, 28)
        model(noisy)
        t0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            model(noisy)
        forward_rate = reps * a.batch / (time.perf_counter() - t0)
    rows = a.n * (a.selection_draws + a.draws)
    report = {
        "tool": f"torch {torch.__version__}",
        "threads": a.threads,
        "sigma": a.sigma,
        "n0": a.selection_draws,
        "n": a.draws,
        "alpha": a.alpha,
        "batch": a.batch,
        "images": a.n,
        "certify_seconds": total,
        "draws_per_second": rows / total,
        "forward_rows_per_second": forward_rate,
        "per_sample": per_sample,
    }
    text = json.dumps(report, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()

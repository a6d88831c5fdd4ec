#!/usr/bin/env python3
"""Checks `gibbon attack`'s examples outside gibbon, in PyTorch.

usage: verify_examples.py MODEL.pt OUT_DIR IDX_DIR NORM EPS

MODEL.pt: a TorchScript classifier on [0, 1] inputs; OUT_DIR: the folder `gibbon attack --out-dir`
wrote (adversarial.npy, labels.npy, result.json); IDX_DIR: the IDX data set the attack ran on
(its t10k test split, the first N images); NORM: linf, l2 or l1. Every sample gibbon reports
broken must be misclassified by the model, lie in [0, 1] and be within EPS of its clean image.
Exit 1 when one is not.
"""
import gzip
import json
import os
import sys

import numpy as np
import torch


def idx_images(folder, n):
    name = next(f for f in sorted(os.listdir(folder)) if f.startswith("t10k-images"))
    raw = open(os.path.join(folder, name), "rb").read()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
    x = np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 1, rows, cols)[:n]
    return x.astype(np.float32) / 255.0


def main():
    model_path, out_dir, data_dir, norm, eps = sys.argv[1:6]
    eps = float(eps)
    model = torch.jit.load(model_path).eval()
    adv = np.load(os.path.join(out_dir, "adversarial.npy"))
    labels = np.load(os.path.join(out_dir, "labels.npy"))
    result = json.load(open(os.path.join(out_dir, "result.json")))
    clean = torch.from_numpy(idx_images(data_dir, len(adv)))
    adv = torch.from_numpy(adv.reshape(clean.shape))
    with torch.no_grad():
        pred = model(adv).argmax(1).numpy()
    diff = (adv - clean).flatten(1)
    p = {"linf": float("inf"), "l2": 2, "l1": 1}[norm]
    dist = diff.norm(p=p, dim=1).numpy()
    in_box = ((adv >= 0) & (adv <= 1)).flatten(1).all(1).numpy()
    broken = [r["index"] for r in result["per_sample"] if r.get("broken_by")]
    bad = [i for i in broken if pred[i] == labels[i] or dist[i] > eps * (1 + 1e-6) or not in_box[i]]
    worst = max((dist[i] for i in broken), default=0.0)
    print(f"{len(broken)} reported broken, {len(broken) - len(bad)} confirmed by PyTorch "
          f"(largest {norm} distance {worst:.7f}, eps {eps}); not confirmed: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks `gibbon attack`'s examples outside gibbon, in PyTorch.

usage: verify_examples.py MODEL.pt OUT_DIR IDX_DIR NORM EPS

MODEL.pt: a TorchScript classifier on [0, 1] inputs; OUT_DIR: the folder `gibbon attack --out-dir`
wrote (adversarial.npy, labels.npy, result.json); IDX_DIR: the IDX data set the attack ran on
(its t10k test split); NORM: linf, l2 or l1. Every sample gibbon reports
broken must be misclassified by the model, lie in [0, 1] and be within EPS of its clean image.
Exit 1 when one is not.
"""
import json
import os
import sys

import numpy as np
import torch

from certify_peer import read_idx


def main():
    model_path, out_dir, data_dir, norm, eps = sys.argv[1:6]
    eps = float(eps)
    model = torch.jit.load(model_path).eval()
    adv = np.load(os.path.join(out_dir, "adversarial.npy"))
    labels = np.load(os.path.join(out_dir, "labels.npy"))
    rows = json.load(open(os.path.join(out_dir, "result.json")))["per_sample"]
    # adversarial.npy and labels.npy hold one row per per_sample record, in its order; a record's
    # "index" is its image in the data set.
    images = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte"))
    index = [r["index"] for r in rows]
    clean = torch.from_numpy(images[index].astype(np.float32) / 255.0).unsqueeze(1)
    adv = torch.from_numpy(adv.reshape(clean.shape))
    with torch.no_grad():
        pred = model(adv).argmax(1).numpy()
    p = {"linf": float("inf"), "l2": 2, "l1": 1}[norm]
    dist = (adv - clean).flatten(1).norm(p=p, dim=1).numpy()
    in_box = ((adv >= 0) & (adv <= 1)).flatten(1).all(1).numpy()
    broken = [k for k, r in enumerate(rows) if r.get("broken_by")]
    failed = [k for k in broken if pred[k] == labels[k] or dist[k] > eps * (1 + 1e-6) or not in_box[k]]
    bad = [index[k] for k in failed]
    worst = max((dist[k] for k in broken), default=0.0)
    print(f"{len(broken)} reported broken, {len(broken) - len(bad)} confirmed by PyTorch "
          f"(largest {norm} distance {worst:.7f}, eps {eps}); not confirmed: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

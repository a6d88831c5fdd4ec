#!/usr/bin/env python3
"""Records per-image peer results for tests/per_image_peers.rs.

Runs peer attacks on the first N MNIST test images (default 200) of the adversarially trained
reference model and writes crates/gibbon/tests/fixtures/peer_masks.json: one row per attack, in
the schema of ../shared/reference/reference.json (model, tool, attack, params with norm and eps,
n, clean/robust accuracy, clean_correct_mask and robust_mask with '1' = still correct, seconds,
tool versions).

Peers: torchattacks 3.5.1 APGD-CE and AutoAttack (standard) at L2 eps 2; ART 1.20.1's
AutoProjectedGradientDescent at L1 eps 10. Installs them into gibbon's venv when missing:

    . scripts/env.sh && python scripts/record_peer_masks.py [--n 200] [--only l2-apgd,...]

Every returned example is re-checked inside the threat model before it counts.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GIBBON_SHARED", ROOT.parent / "shared"))
OUT = ROOT / "crates/gibbon/tests/fixtures/peer_masks.json"
PEERS = ["torchattacks==3.5.1", "adversarial-robustness-toolbox==1.20.1", "packaging"]


def ensure_peers():
    try:
        import torchattacks  # noqa: F401
        import art  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *PEERS])


def mnist_test(n):
    import numpy as np

    d = SHARED / "data/mnist"
    with gzip.open(d / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def distance(norm, x, x_adv):
    import torch

    d = (x_adv - x).flatten(1).double()
    p = {"linf": float("inf"), "l2": 2, "l1": 1}[norm]
    return d.norm(p=p, dim=1)


def torchattacks_l2(kind, model, eps):
    import torchattacks

    if kind == "apgd":
        return torchattacks.APGD(model, norm="L2", eps=eps, steps=100, n_restarts=1,
                                 loss="ce", seed=0), {"steps": 100, "n_restarts": 1, "loss": "ce"}
    aa = torchattacks.AutoAttack(model, norm="L2", eps=eps, version="standard", n_classes=10,
                                 seed=0)
    return aa, {"version": "standard", "n_classes": 10}


def art_apgd_l1(model, eps, x):
    import torch
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                            nb_classes=10, clip_values=(0.0, 1.0))
    params = {"norm": 1, "eps": eps, "eps_step": eps / 2, "max_iter": 100, "nb_random_init": 5,
              "loss_type": "cross_entropy", "batch_size": 100}
    attack = AutoProjectedGradientDescent(estimator=clf, **params, verbose=False)
    return attack, params


def run_row(key, model, x, y):
    import numpy as np
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        clean = model(xt).argmax(1) == yt
    started = time.time()
    if key.startswith("l2-"):
        norm, eps = "l2", 2.0
        attack, params = torchattacks_l2(key[3:], model, eps)
        x_adv = torch.cat([attack(xt[i:i + 100], yt[i:i + 100]) for i in range(0, len(x), 100)])
        tool = "torchattacks"
        name = "APGD (L2, CE)" if key == "l2-apgd" else "AutoAttack (L2, standard)"
        params = {"norm": "L2", "eps": eps, **params, "seed": 0}
    else:
        norm, eps = "l1", 10.0
        attack, params = art_apgd_l1(model, eps, x)
        x_adv = torch.from_numpy(attack.generate(x=x, y=y).astype(np.float32))
        tool, name = "ART", "AutoProjectedGradientDescent (L1, CE)"
        params = {**params, "norm": "L1"}
    seconds = time.time() - started
    inside = (distance(norm, xt, x_adv) <= eps + 1e-5) & (x_adv.flatten(1).min(1).values >= 0) \
        & (x_adv.flatten(1).max(1).values <= 1) & torch.isfinite(x_adv.flatten(1)).all(1)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != yt
    robust = clean & ~(fooled & inside)
    import art as art_mod
    import torchattacks

    return {
        "model": "adv", "tool": tool, "attack": name, "params": params, "n": len(x),
        "clean_acc": clean.float().mean().item(), "robust_acc": robust.float().mean().item(),
        "clean_correct_mask": "".join("1" if c else "0" for c in clean.tolist()),
        "robust_mask": "".join("1" if r else "0" for r in robust.tolist()),
        "outside_threat_model": int((~inside).sum().item()),
        "seconds": round(seconds, 2), "torch_threads": torch.get_num_threads(),
        "tool_versions": {"torch": torch.__version__, "torchattacks": torchattacks.__version__,
                          "art": art_mod.__version__, "python": sys.version.split()[0]},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--only", default="l2-apgd,l2-autoattack,l1-art-apgd")
    p.add_argument("--out", type=Path, default=OUT, help="JSON file to update (default: the fixture)")
    args = p.parse_args()
    out = args.out
    ensure_peers()
    import torch

    torch.manual_seed(0)
    model = torch.jit.load(str(SHARED / "reference/mnist_smallcnn_adv.pt")).eval()
    x, y = mnist_test(args.n)
    doc = json.loads(out.read_text()) if out.exists() else {"results": []}
    doc["description"] = ("Per-image peer results on the first images of the MNIST test set, "
                          "adversarially trained reference model; written by "
                          "scripts/record_peer_masks.py.")
    for key in args.only.split(","):
        row = run_row(key, model, x, y)
        doc["results"] = [r for r in doc["results"]
                          if (r["tool"], r["attack"]) != (row["tool"], row["attack"])] + [row]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{key}: robust {row['robust_acc']:.3f} in {row['seconds']} s", flush=True)


if __name__ == "__main__":
    main()

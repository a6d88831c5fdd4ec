#!/usr/bin/env python3
"""Independent Python reference for adaptive attacks (BPDA, EOT) on gradient-masked MNIST models.

What
----
Linf PGD (Madry et al. 2018) with adaptive gradients, run on the first N MNIST t10k images, so that
gibbon's BPDA / EOT attacks can be compared with a small, separate implementation:

* PGD: ``--steps`` (100) sign-gradient steps of ``--alpha`` (default 2.5*eps/steps, 0.0075 at
  eps 0.3), uniform random start in the eps ball, ``--restarts`` (5), CE loss, every iterate
  projected on the eps ball and clamped to [0,1].
* A sample is *broken* when some iterate (the random start, any step, or the last point) of some
  restart lies inside the ball (re-checked: Linf <= eps + 1e-6 and inside [0,1]) and the model
  misclassifies it. Every iterate is judged, not only the last one; the first misclassifying
  iterate found is kept as that sample's adversarial example and the sample leaves the attack
  (restarts only run on samples not yet broken). Samples the model gets wrong on the clean image
  count as not robust and are not attacked. At the end every kept adversarial example is
  re-judged in one batch (deterministic models); ``verdict_disagreements`` counts flips.
* ``--bpda identity`` (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients..."): the verdict
  (forward) is the real model, the backward replaces a non-differentiable input transform T by
  the identity: the gradient used is grad_t CE(surrogate(t), y) evaluated at t = T(x) and passed
  straight through to x.
    - For ``--model quantized.pt`` (whose forward contains round(x*7)/7) the surrogate is the
      UNMASKED adv model (``--surrogate``, default /work/shared/reference/mnist_smallcnn_adv.pt)
      and T = ``--bpda-transform`` (default ``bits:3``, i.e. round(x*7)/7, the same map). The
      verdict comes from the quantized.pt file itself, not from surrogate(T(x)).
    - ``--preprocess SPEC`` puts a transform in front of ``--model`` (verdict model(P(x))); with
      ``--bpda identity`` T defaults to P and the surrogate to the model:
        ``bits:B``  x -> round(x*(2^B-1))/(2^B-1)   (bits:3 = the quantized.pt map)
        ``jpeg:Q``  PIL JPEG encode/decode at quality Q of the 28x28 grayscale image rounded to
                    uint8 (round(255x)), then /255. PIL's libjpeg is NOT the codec gibbon
                    uses, so gibbon's jpeg numbers will be close to these, not equal.
* ``--eot K`` (Expectation over Transformation, Athalye et al. 2018): for randomised models
  (noise.pt) the gradient is the mean over K fresh forward/backward draws per step, and each
  candidate is judged by ``--votes`` (default 9 when K > 1, else 1) fresh forward passes:
  broken when wrong in a majority (>= 5 of 9). The clean verdict uses the same vote.
  Because every iterate gets its own 9-pass vote, points whose real error rate is near 50 %
  pass by luck; ``--confirm-votes M`` (default 101) re-judges the kept adversarials with M fresh
  passes afterwards and reports ``robust_accuracy_confirmed`` next to the protocol number.

Output (``--out FILE``, JSON; rewritten after every restart with ``"complete": false`` so a
killed run still leaves its partial result): model, sha256, n, eps, steps, alpha, restarts,
settings, clean accuracy, robust accuracy, robust mask ('1' = still robust) and clean mask over
the n images, per-sample [restart, step] at which each sample broke, seconds (attack wall time),
load average and versions.

How to run (niced, one thread; from the repository root, gibbon venv):

    PY=~/.cache/gibbon/venv/bin/python; M=/work/run15/masked
    nice -n 10 $PY scripts/bpda_reference.py --model $M/quantized.pt --bpda identity --out $M/ref_quantized.json
    nice -n 10 $PY scripts/bpda_reference.py --preprocess bits:3 --bpda identity --out $M/ref_bits3.json
    nice -n 10 $PY scripts/bpda_reference.py --model $M/noise.pt --eot 10 --out $M/ref_noise.json
    nice -n 10 $PY scripts/bpda_reference.py --preprocess jpeg:75 --bpda identity --out $M/ref_jpeg75.json

Seed: ``torch.manual_seed(--seed)`` (0) once at the start; results depend on the seed only
through the random starts and the noise draws.
"""
import argparse
import gzip
import hashlib
import io
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REF_ADV = "/work/shared/reference/mnist_smallcnn_adv.pt"
MNIST_DIR = "/work/shared/data/mnist"


# --------------------------------------------------------------------------------------------
# data, models, transforms
# --------------------------------------------------------------------------------------------
def load_mnist_test(n, mnist_dir):
    """First n t10k images (float32 (n,1,28,28), pixel/255) and labels (int64), file order."""
    with gzip.open(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    assert int.from_bytes(raw[0:4], "big") == 2051
    imgs = np.frombuffer(raw, dtype=np.uint8, offset=16)[: n * 784].reshape(n, 1, 28, 28)
    with gzip.open(os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
        raw = f.read()
    assert int.from_bytes(raw[0:4], "big") == 2049
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8)[:n]
    x = torch.from_numpy(imgs.astype(np.float32) / np.float32(255.0))
    return x, torch.from_numpy(labels.astype(np.int64))


def load_model(path):
    m = torch.jit.load(path)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def jpeg_roundtrip(x, quality):
    """PIL JPEG encode/decode of each (1,28,28) image in x, after rounding to uint8."""
    from PIL import Image

    u8 = np.clip(np.rint(x.detach().numpy() * 255.0), 0, 255).astype(np.uint8)
    out = np.empty(u8.shape, dtype=np.float32)
    for i in range(u8.shape[0]):
        buf = io.BytesIO()
        Image.fromarray(u8[i, 0], mode="L").save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[i, 0] = np.asarray(Image.open(buf).convert("L"), dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(out)


def make_transform(spec):
    """'none' | 'bits:B' | 'jpeg:Q' -> (function on a float tensor, canonical name). No gradient."""
    if spec in (None, "", "none"):
        return None, "none"
    kind, _, arg = spec.partition(":")
    if kind == "bits":
        levels = float(2 ** int(arg) - 1)
        return (lambda x: torch.round(x * levels) / levels), f"bits:{int(arg)}"
    if kind == "jpeg":
        q = int(arg)
        return (lambda x: jpeg_roundtrip(x, q)), f"jpeg:{q}"
    raise SystemExit(f"unknown transform {spec!r} (use none, bits:B or jpeg:Q)")


# --------------------------------------------------------------------------------------------
# the attack
# --------------------------------------------------------------------------------------------
class Oracle:
    """Verdicts (is x misclassified?) and attack gradients for one configuration."""

    def __init__(self, args):
        self.model = load_model(args.model)
        self.pre, self.pre_name = make_transform(args.preprocess)
        self.bpda = args.bpda
        self.eot = args.eot
        self.votes = args.votes
        if self.bpda == "identity":
            tspec = args.bpda_transform or (args.preprocess if self.pre else "bits:3")
            self.T, self.T_name = make_transform(tspec)
            if self.T is None:
                raise SystemExit("--bpda identity needs a transform (--bpda-transform or --preprocess)")
            sur = args.surrogate or (args.model if self.pre else REF_ADV)
            self.surrogate_path = sur
            self.surrogate = self.model if sur == args.model else load_model(sur)
            # surrogate(T(x)) is then literally the verdict's computation: reuse its logits
            self.reuse = (self.pre is not None and sur == args.model and self.T_name == self.pre_name
                          and self.votes == 1 and self.eot == 1)
        else:
            self.T = self.T_name = self.surrogate = self.surrogate_path = None
            if self.pre is not None and self.pre_name.startswith("jpeg"):
                raise SystemExit("jpeg is not differentiable: use --bpda identity")
            self.reuse = self.votes == 1 and self.eot == 1

    def logits(self, x):
        with torch.no_grad():
            return self.model(self.pre(x) if self.pre else x)

    def wrong(self, x, y):
        """Boolean per sample: misclassified (by a majority of `votes` passes if votes > 1)."""
        if self.votes == 1:
            return self.logits(x).argmax(1) != y
        n_wrong = torch.zeros_like(y)
        for _ in range(self.votes):
            n_wrong += (self.logits(x).argmax(1) != y).long()
        return n_wrong * 2 > self.votes

    def grad(self, x, y):
        """(gradient of the CE loss w.r.t. x, logits usable for the verdict or None)."""
        g_sum = torch.zeros_like(x)
        logits_out = None
        for _ in range(self.eot):
            if self.bpda == "identity":
                # forward through the real T; the gradient w.r.t. t = T(x) is used as the
                # gradient w.r.t. x (backward of T replaced by the identity)
                t = self.T(x.detach()).requires_grad_(True)
                out = self.surrogate(t)
                (g,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), t)
            else:
                # plain autograd through the model (and a differentiable --preprocess)
                xg = x.detach().clone().requires_grad_(True)
                out = self.model(self.pre(xg) if self.pre else xg)
                (g,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), xg)
            g_sum += g
            logits_out = out.detach()
        return g_sum / self.eot, (logits_out if self.reuse else None)


def in_ball(xa, x0, eps):
    d = (xa.double() - x0.double()).abs().flatten(1).max(1).values
    return (d <= eps + 1e-6) & (xa.flatten(1).min(1).values >= 0) & (xa.flatten(1).max(1).values <= 1)


def attack_chunk(oracle, x0, y0, eps, alpha, steps):
    """One PGD restart on a chunk. Returns (broken mask, kept adversarial images, step of break)."""
    n = x0.shape[0]
    broken = torch.zeros(n, dtype=torch.bool)
    adv = x0.clone()
    at_step = torch.full((n,), -1, dtype=torch.long)
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    xa = torch.min(torch.max(x0 + torch.empty_like(x0).uniform_(-eps, eps), lo), hi)
    alive = torch.arange(n)
    for step in range(steps + 1):
        xs, ys = xa[alive], y0[alive]
        g, logits = (None, None)
        if oracle.reuse and step < steps:
            g, logits = oracle.grad(xs, ys)
        wrong = (logits.argmax(1) != ys) if logits is not None else oracle.wrong(xs, ys)
        wrong &= in_ball(xs, x0[alive], eps)
        if wrong.any():
            idx = alive[wrong]
            broken[idx] = True
            adv[idx] = xs[wrong]
            at_step[idx] = step
            keep = ~wrong
            alive, xs, ys = alive[keep], xs[keep], ys[keep]
            if g is not None:
                g = g[keep]
        if step == steps or alive.numel() == 0:
            break
        if g is None:
            g, _ = oracle.grad(xs, ys)
        xa[alive] = torch.min(torch.max(xs + alpha * g.sign(), lo[alive]), hi[alive])
    return broken, adv, at_step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=REF_ADV, help="TorchScript model whose verdict counts")
    ap.add_argument("--preprocess", default="none", help="none | bits:B | jpeg:Q in front of --model")
    ap.add_argument("--bpda", default="none", choices=["none", "identity"])
    ap.add_argument("--bpda-transform", default=None,
                    help="transform replaced by the identity in the backward pass "
                         "(default: --preprocess, or bits:3 = round(x*7)/7 when there is none)")
    ap.add_argument("--surrogate", default=None,
                    help="differentiable model for the BPDA gradient (default: --model when "
                         "--preprocess is set, else the unmasked adv reference model)")
    ap.add_argument("--eot", type=int, default=1, help="gradient draws per step (EOT)")
    ap.add_argument("--votes", type=int, default=None,
                    help="forward passes per verdict, majority decides (default 9 if --eot > 1, else 1)")
    ap.add_argument("--confirm-votes", type=int, default=101,
                    help="randomised models only: after the attack, re-judge each kept adversarial "
                         "with this many fresh passes and also report robust_accuracy_confirmed "
                         "(diagnostic; 0 = off)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=None, help="step size (default 2.5*eps/steps)")
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnist-dir", default=MNIST_DIR)
    ap.add_argument("--out", default=None, help="JSON output file")
    args = ap.parse_args()
    if args.votes is None:
        args.votes = 9 if args.eot > 1 else 1
    alpha = args.alpha if args.alpha is not None else 2.5 * args.eps / max(args.steps, 1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    oracle = Oracle(args)
    x, y = load_mnist_test(args.n, args.mnist_dir)
    settings = {
        "attack": "Linf PGD, CE loss, sign steps, uniform random start, projection + clamp [0,1]",
        "alpha": alpha, "bpda": args.bpda, "preprocess": oracle.pre_name,
        "bpda_transform": oracle.T_name, "surrogate": oracle.surrogate_path,
        "surrogate_sha256": sha256(oracle.surrogate_path) if oracle.surrogate_path else None,
        "eot": args.eot, "votes": args.votes, "batch": args.batch, "seed": args.seed,
        "threads": args.threads, "verdict_logits_reused_from_gradient_pass": oracle.reuse,
        "judged": "every iterate (random start, each step, last point); broken = misclassified "
                  "and inside the ball (Linf <= eps+1e-6, in [0,1])"
                  + ("; misclassified = wrong in a majority of %d fresh passes" % args.votes
                     if args.votes > 1 else ""),
    }
    print("settings:", json.dumps(settings), file=sys.stderr)

    # clean verdict (same vote as the attack's)
    clean_ok = torch.cat([~oracle.wrong(x[i:i + args.batch], y[i:i + args.batch])
                          for i in range(0, args.n, args.batch)])
    single_pass = None
    if args.votes > 1:
        single_pass = float(np.mean([(oracle.logits(x).argmax(1) == y).float().mean().item()
                                     for _ in range(args.votes)]))
    print(f"clean accuracy {clean_ok.float().mean().item():.4f}", file=sys.stderr)

    broken = ~clean_ok                  # not robust: wrong clean or broken by the attack
    adv = x.clone()
    broke_at = [None] * args.n
    load0 = os.getloadavg()
    t0 = time.time()
    restarts_done = 0

    def write(complete, seconds, extra=None):
        robust = ~broken
        rec = {
            "model": args.model, "model_sha256": sha256(args.model), "n": args.n, "eps": args.eps,
            "steps": args.steps, "alpha": alpha, "restarts": args.restarts,
            "restarts_done": restarts_done, "complete": complete, "settings": settings,
            "data": f"first {args.n} t10k images, file order, pixel/255 float32 ({args.mnist_dir})",
            "clean_accuracy": clean_ok.float().mean().item(),
            "robust_accuracy": robust.float().mean().item(),
            "clean_mask": "".join("1" if v else "0" for v in clean_ok.tolist()),
            "robust_mask": "".join("1" if v else "0" for v in robust.tolist()),
            "broken_at_restart_step": broke_at,
            "seconds": seconds, "loadavg_at_start": load0, "loadavg_at_end": os.getloadavg(),
            "torch": torch.__version__, "command": " ".join(sys.argv),
        }
        if single_pass is not None:
            rec["clean_accuracy_single_pass_mean"] = single_pass
        if extra:
            rec.update(extra)
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(rec, f, indent=1)
            os.replace(tmp, args.out)
        return rec

    for r in range(args.restarts):
        todo = torch.nonzero(~broken).flatten()
        for i in range(0, todo.numel(), args.batch):
            idx = todo[i:i + args.batch]
            b, a, s = attack_chunk(oracle, x[idx], y[idx], args.eps, alpha, args.steps)
            for j in torch.nonzero(b).flatten().tolist():
                k = idx[j].item()
                broken[k] = True
                adv[k] = a[j]
                broke_at[k] = [r, int(s[j])]
        restarts_done = r + 1
        el = time.time() - t0
        print(f"restart {r + 1}/{args.restarts}: robust {(~broken).float().mean().item():.4f} "
              f"({el:.0f} s)", file=sys.stderr)
        write(False, el)

    seconds = time.time() - t0
    # final re-check of every kept adversarial example, in one pass (or a fresh vote)
    attacked_broken = torch.tensor([b is not None for b in broke_at])
    extra = {}
    if attacked_broken.any():
        ids = torch.nonzero(attacked_broken).flatten()
        ok_ball = in_ball(adv[ids], x[ids], args.eps)
        assert bool(ok_ball.all()), "an adversarial example left the ball"
        still_wrong = torch.cat([oracle.wrong(adv[ids[i:i + args.batch]], y[ids[i:i + args.batch]])
                                 for i in range(0, ids.numel(), args.batch)])
        max_linf = (adv[ids].double() - x[ids].double()).abs().flatten(1).max().item()
        extra = {"max_linf_of_adversarials": max_linf,
                 "verdict_disagreements": int((~still_wrong).sum().item())}
        if args.votes > 1:
            extra["verdict_disagreements_note"] = (
                "fresh %d-pass vote on the kept adversarials; randomised, so borderline ones can "
                "flip; robust accuracy uses the in-attack verdict" % args.votes)
            if args.confirm_votes > 0:
                # Diagnostic: the attack keeps the first iterate that wins a 9-pass vote, out of
                # up to (steps+1)*restarts tries, so near-50% points get through by luck. A long
                # fresh vote estimates each kept point's real error rate.
                m = args.confirm_votes
                n_wrong = torch.zeros(ids.numel(), dtype=torch.long)
                for _ in range(m):
                    n_wrong += torch.cat([
                        (oracle.logits(adv[ids[i:i + args.batch]]).argmax(1) != y[ids[i:i + args.batch]]).long()
                        for i in range(0, ids.numel(), args.batch)])
                confirmed = n_wrong * 2 > m
                robust_c = ~broken.clone()
                robust_c[ids[~confirmed]] = True
                rates = (n_wrong.double() / m)
                extra.update({
                    "confirm_votes": m,
                    "robust_accuracy_confirmed": robust_c.float().mean().item(),
                    "robust_mask_confirmed": "".join("1" if v else "0" for v in robust_c.tolist()),
                    "kept_adversarials": int(ids.numel()),
                    "kept_adversarials_confirmed": int(confirmed.sum().item()),
                    "kept_adversarial_error_rate_quartiles": [
                        float(rates.quantile(q)) for q in (0.0, 0.25, 0.5, 0.75, 1.0)],
                    "confirm_note": "robust_accuracy_confirmed counts a kept adversarial as broken "
                                    "only if wrong in a majority of %d fresh passes (diagnostic, "
                                    "not part of the protocol)" % m,
                })
        else:
            # deterministic: the one-batch re-check is final
            for k, w in zip(ids.tolist(), still_wrong.tolist()):
                if not w:
                    broken[k] = False
                    broke_at[k] = None
    rec = write(True, seconds, extra)
    print(f"clean {rec['clean_accuracy']:.4f} robust {rec['robust_accuracy']:.4f} "
          f"seconds {seconds:.1f} {extra}", file=sys.stderr)
    print(json.dumps({k: rec[k] for k in ("model", "n", "clean_accuracy", "robust_accuracy", "seconds")}))


if __name__ == "__main__":
    main()

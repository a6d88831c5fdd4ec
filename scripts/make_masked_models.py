#!/usr/bin/env python3
"""Writes gradient-masked variants of the shared adversarially trained MNIST SmallCNN.

What
----
gibbon's adaptive-attack features (BPDA, EOT, the "is this gradient masked?" diagnostics) need
models whose gradients are deliberately broken, the classic failure cases of Athalye, Carlini &
Wagner, "Obfuscated Gradients Give a False Sense of Security" (ICML 2018), and of AutoAttack
issue #43 (a layer whose forward is the identity and whose backward is zero). This script builds
them from the shared reference model /work/shared/reference/mnist_smallcnn_adv.pt (SmallCNN,
PGD-trained at Linf eps 0.3, input float32 (N,1,28,28) in [0,1], logits (N,10)):

=================  ========================================================================
file               what it does
=================  ========================================================================
quantized.pt/.onnx input quantised to 8 levels, x -> round(x*7)/7, then the network
                   (shattered gradient: d round/dx = 0 almost everywhere). The ONNX graph
                   contains a ``Round`` node.
saturated.pt/.onnx logits multiplied by 1e4 (softmax saturates, CE gradients underflow to 0
                   for confidently classified inputs; margin losses still work)
gradkill.pt        z = x.detach(); logits = net(z) + 0 * sum(x): forward is exactly the
                   network, the input gradient is exactly zero (AutoAttack issue #43)
noise.pt           randomised: net(x + 0.2 * randn_like(x)), fresh noise at every call,
                   no clamping (needs EOT)
=================  ========================================================================

Each ``.pt`` is a ``torch.jit.script``-ed wrapper around an eager SmallCNN rebuilt from the
reference TorchScript file's own state dict (checked bit-identical to the reference), saved by
torch 2.13 so that libtorch 2.13 (tch) can load it. The ONNX files use opset 17, the
TorchScript-based exporter (``dynamo=False``), input ``input``, output ``logits`` and a
dynamic ``batch`` axis; they are checked with ``onnx.checker`` and against torch with
``onnx.reference.ReferenceEvaluator`` (no onnxruntime needed).

Checks done for every file (results go to OUT_DIR/masked_models.json):
  * the saved file reloads (``torch.jit.load``), is in eval mode, and for the deterministic
    variants gives the same logits as the eager wrapper at batch sizes 1, 7 and 128
    (max abs difference recorded; it is 0.0 here);
  * gradkill: logits equal the unmasked reference model's bit for bit, and the input gradient
    of the CE loss is exactly all zeros;
  * noise: two calls differ, a re-seeded call repeats, shapes are right for batch 1, 7, 128;
  * clean accuracy on the first 500 t10k images (noise: mean over 5 passes).

``--tiny-fixtures DIR`` also writes tiny models for gibbon's Rust unit tests (a random-init
MLP 784 -> H -> 10, ``torch.manual_seed(0)``, no training): ``tiny_plain.pt/.onnx`` (the MLP),
``tiny_round.pt/.onnx`` (round(x*7)/7 then the MLP), ``tiny_detach.pt`` (gradient killer then
the MLP), all taking (N,1,28,28), plus ``tiny_fixtures.json`` (sha256s and expected logits on a
formula-defined input that the Rust tests can rebuild, see ``tiny_input``). H defaults to 8,
not 16: float32 784x16 weights alone are 50,176 bytes, so a 16-wide MLP cannot be "well under
50 KB"; with H = 8 every file is about 26-29 KB. ``--tiny-hidden 16`` gives the 16-wide one.

How to run (from the repository root; torch 2.13 and onnx, e.g. the gibbon venv after
``~/.cache/gibbon/venv/bin/pip install onnx``):

    nice -n 10 ~/.cache/gibbon/venv/bin/python scripts/make_masked_models.py /work/run15/masked
    nice -n 10 ~/.cache/gibbon/venv/bin/python scripts/make_masked_models.py \\
        --tiny-fixtures crates/gibbon/tests/fixtures/masked

OUT_DIR and --tiny-fixtures can be given together. The script uses one CPU thread.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import time
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REF_DIR = "/work/shared/reference"
REF_PT = os.path.join(REF_DIR, "mnist_smallcnn_adv.pt")
MNIST_DIR = "/work/shared/data/mnist"
N_ACC = 500          # clean accuracy on the first N_ACC t10k images
NOISE_SIGMA = 0.2
NOISE_PASSES = 5
SAT_SCALE = 1e4


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def load_mnist_test(n, mnist_dir=MNIST_DIR):
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


# --------------------------------------------------------------------------------------------
# networks and masking wrappers
# --------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """The reference SmallCNN (see /work/shared/reference/README.md)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 32, 3)
        self.conv3 = nn.Conv2d(32, 64, 3)
        self.conv4 = nn.Conv2d(64, 64, 3)
        self.fc1 = nn.Linear(1024, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class Quantized(nn.Module):
    """x -> round(x*7)/7 (8 levels, round half to even as in torch and ONNX), then the net."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        q = torch.round(x * 7.0) / 7.0
        return self.net(q)


class Saturated(nn.Module):
    """The net's logits multiplied by 1e4."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * 10000.0


class GradKill(nn.Module):
    """Forward: exactly net(x). Backward: exactly zero input gradient (AutoAttack issue #43).

    The network sees a detached copy of x; the only autograd path from x to the output is
    0 * (per-sample sum of x), which adds +0.0 to the logits (x is finite and >= 0) and
    gives d/dx = 0 * (sum of the upstream gradient) = 0 (possibly -0.0) for every pixel.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = x.detach()
        logits = self.net(z)
        return logits + 0.0 * torch.flatten(x, 1).sum(dim=1, keepdim=True)


class Noise(nn.Module):
    """Randomised input: net(x + 0.2 * N(0,1)), fresh noise at every call, no clamping."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        noisy = x + 0.2 * torch.randn_like(x)
        return self.net(noisy)


class TinyMLP(nn.Module):
    """Tiny random-init MLP on flattened MNIST: 784 -> hidden -> ReLU -> 10."""

    def __init__(self, hidden):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        h = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(h)


class TinyRound(nn.Module):
    """round(x*7)/7 then the tiny MLP (a separate class so its TorchScript name is stable)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        q = torch.round(x * 7.0) / 7.0
        return self.net(q)


class TinyDetach(nn.Module):
    """Gradient killer (as GradKill) then the tiny MLP."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = x.detach()
        logits = self.net(z)
        return logits + 0.0 * torch.flatten(x, 1).sum(dim=1, keepdim=True)


class TinyRoundInplace(nn.Module):
    """In-place round_ (x*7 rounded in place, /7) then the tiny MLP: an op gibbon's TorchScript
    BPDA rewrite refuses (in-place), so the audit must fall back to gradient-free attacks."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        q = x * 7.0
        q = torch.round_(q) / 7.0
        return self.net(q)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def freeze(m):
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def load_reference_net():
    """Eager SmallCNN with the reference TorchScript file's weights, checked bit-identical."""
    ref = freeze(torch.jit.load(REF_PT))
    net = SmallCNN()
    net.load_state_dict(ref.state_dict())
    freeze(net)
    x, _ = load_mnist_test(128)
    with torch.no_grad():
        d = (net(x) - ref(x)).abs().max().item()
    assert d == 0.0, f"eager SmallCNN differs from the reference by {d}"
    return ref, net


def logits_in_chunks(model, x, bs):
    with torch.no_grad():
        return torch.cat([model(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def save_script(module, path):
    """Script, save, reload; returns the reloaded module."""
    scripted = torch.jit.script(module)
    scripted.eval()
    torch.jit.save(scripted, path)
    loaded = torch.jit.load(path)
    assert not loaded.training, "reloaded module is in training mode"
    return loaded


def check_deterministic(loaded, eager, x):
    """Batch checks of a reloaded deterministic module on x (128 images).

    Returns, for batch sizes 1, 7 and 128, the max |logit difference| of the reloaded file
    (a) against the eager module run at the same batch size, and (b) against the reloaded
    file's own batch-128 logits (batch-size invariance). A few calls are made at every batch
    size so that the TorchScript profiling executor has settled.
    """
    full = logits_in_chunks(loaded, x, x.shape[0])
    vs_eager, vs_batch128 = {}, {}
    for bs in (1, 7, 128):
        want = logits_in_chunks(eager, x, bs)
        d_e, d_b = 0.0, 0.0
        for _ in range(3):
            got = logits_in_chunks(loaded, x, bs)
            d_e = max(d_e, (got - want).abs().max().item())
            d_b = max(d_b, (got - full).abs().max().item())
        vs_eager[str(bs)] = d_e
        vs_batch128[str(bs)] = d_b
    return {"max_abs_diff_vs_eager_same_batch": vs_eager,
            "max_abs_diff_vs_own_batch128": vs_batch128}


def export_onnx(module, path, check_x, need_op=None):
    """Export with the TorchScript-based exporter at opset 17, check, and compare with torch."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(module, (dummy,), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    if need_op is not None:
        assert need_op in ops, f"{path}: no {need_op} node in {ops}"
    ev = ReferenceEvaluator(model)
    with torch.no_grad():
        want = module(check_x).numpy()
    res = {"opset": model.opset_import[0].version, "ops": ops}
    for bs in (1, check_x.shape[0]):
        got = np.concatenate([ev.run(None, {"input": check_x[i:i + bs].numpy()})[0]
                              for i in range(0, check_x.shape[0], bs)])
        res[f"max_abs_diff_vs_torch_batch{bs}"] = float(np.abs(got - want).max())
        res[f"max_rel_diff_vs_torch_batch{bs}"] = float(
            (np.abs(got - want) / np.maximum(np.abs(want), 1e-6)).max())
        res["argmax_equal"] = bool((got.argmax(1) == want.argmax(1)).all())
    res["checked_on"] = f"first {check_x.shape[0]} t10k images (onnx.reference.ReferenceEvaluator)"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    res["input_shape"] = [d.dim_param or d.dim_value for d in dims]
    return res


def accuracy(model, x, y, passes=1):
    accs = []
    with torch.no_grad():
        for _ in range(passes):
            accs.append((logits_in_chunks(model, x, 250).argmax(1) == y).float().mean().item())
    return float(np.mean(accs)), accs


def code_files(path):
    """Names of the code/*.py records in a TorchScript zip archive."""
    with zipfile.ZipFile(path) as z:
        return [n for n in z.namelist() if "/code/" in n and n.endswith(".py")]


def gradkill_checks(loaded, ref, x, y):
    xg = x.clone().requires_grad_(True)
    out = loaded(xg)
    loss = F.cross_entropy(out, y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    with torch.no_grad():
        ref_logits = ref(x)
    return {
        "logits_equal_unmasked_reference_exactly": bool(torch.equal(out.detach(), ref_logits)),
        "max_abs_logit_diff_vs_reference": (out.detach() - ref_logits).abs().max().item(),
        "ce_input_grad_all_exactly_zero": bool((g == 0).all().item()),
        "ce_input_grad_negative_zeros": int(torch.signbit(g).sum().item()),
        "ce_input_grad_max_abs": g.abs().max().item(),
        "checked_on": f"first {x.shape[0]} t10k images, CE loss (sum), reloaded file",
    }


def noise_checks(loaded, x):
    with torch.no_grad():
        a = loaded(x)
        b = loaded(x)
        torch.manual_seed(123)
        c = loaded(x)
        torch.manual_seed(123)
        d = loaded(x)
        shapes = {str(bs): list(loaded(x[:bs]).shape) for bs in (1, 7, 128)}
    return {
        "two_calls_differ": bool(not torch.equal(a, b)),
        "mean_abs_diff_between_two_calls": (a - b).abs().mean().item(),
        "same_seed_same_batch_repeats": bool(torch.equal(c, d)),
        "output_shapes": shapes,
        "note": "randomised, so logits at different batch sizes are not comparable; "
                "only shapes are checked",
    }


# --------------------------------------------------------------------------------------------
# main parts
# --------------------------------------------------------------------------------------------
def make_masked(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    ref, net = load_reference_net()
    x, y = load_mnist_test(N_ACC)
    x128 = x[:128]
    xo = x[:16]          # ONNX reference evaluator is slow; 16 images suffice for the check
    record = {
        "what": "gradient-masked variants of the shared adv SmallCNN for adaptive-attack tests",
        "script": "scripts/make_masked_models.py",
        "torch": torch.__version__,
        "reference_model": {"file": REF_PT, "sha256": sha256(REF_PT)},
        "clean_accuracy_n": N_ACC,
        "data": "first %d t10k images, file order, pixel/255 float32" % N_ACC,
        "variants": {},
    }
    acc, _ = accuracy(ref, x, y)
    record["reference_model"]["clean_accuracy"] = acc
    print(f"reference adv model: clean acc {acc:.3f} on first {N_ACC}")

    specs = [
        ("quantized", Quantized(net), "input quantised to 8 levels, x -> torch.round(x*7)/7 "
         "(round half to even), then the adv SmallCNN", True, "Round"),
        ("saturated", Saturated(net), "adv SmallCNN logits multiplied by 1e4", True, None),
        ("gradkill", GradKill(net), "gradient killer at the input: z = x.detach(); "
         "logits = net(z) + 0.0 * flatten(x,1).sum(1, keepdim=True); forward identical to "
         "the adv model, input gradient exactly zero (AutoAttack issue #43)", False, None),
        ("noise", Noise(net), "randomised: net(x + 0.2 * torch.randn_like(x)), fresh noise "
         "at every call, no clamp", False, None),
    ]
    for name, module, what, with_onnx, need_op in specs:
        module = freeze(module)
        path = os.path.join(out_dir, name + ".pt")
        loaded = freeze(save_script(module, path))
        entry = {"file": path, "sha256": sha256(path), "bytes": os.path.getsize(path),
                 "what": what, "torchscript": "torch.jit.script, saved by torch " + torch.__version__,
                 "code_files_in_archive": code_files(path)}
        if name == "noise":
            torch.manual_seed(0)
            entry["checks"] = noise_checks(loaded, x128)
            torch.manual_seed(0)
            acc, accs = accuracy(loaded, x, y, passes=NOISE_PASSES)
            entry["clean_accuracy"] = acc
            entry["clean_accuracy_passes"] = accs
            entry["clean_accuracy_note"] = f"mean over {NOISE_PASSES} passes, torch.manual_seed(0) first"
        else:
            entry["checks"] = check_deterministic(loaded, module, x128)
            if name == "gradkill":
                entry["checks"].update(gradkill_checks(loaded, ref, x128, y[:128]))
                assert entry["checks"]["ce_input_grad_all_exactly_zero"]
                assert entry["checks"]["logits_equal_unmasked_reference_exactly"]
            acc, _ = accuracy(loaded, x, y)
            entry["clean_accuracy"] = acc
        if with_onnx:
            opath = os.path.join(out_dir, name + ".onnx")
            entry["onnx"] = {"file": opath}
            entry["onnx"].update(export_onnx(module, opath, xo, need_op))
            entry["onnx"]["sha256"] = sha256(opath)
            entry["onnx"]["bytes"] = os.path.getsize(opath)
        record["variants"][name] = entry
        print(f"{name:10s} clean acc {entry['clean_accuracy']:.3f}  {entry['sha256']}  {path}")
        print("           checks:", json.dumps(entry["checks"]))
        if with_onnx:
            o = entry["onnx"]
            print(f"           onnx {o['sha256']}  ops {sorted(set(o['ops']))}  "
                  f"max|onnx-torch| {o['max_abs_diff_vs_torch_batch16']:.3g}")
    with open(os.path.join(out_dir, "masked_models.json"), "w") as f:
        json.dump(record, f, indent=2)
    print("wrote", os.path.join(out_dir, "masked_models.json"))


def tiny_input():
    """Formula-defined (3,1,28,28) input, easy to rebuild in Rust:
    x[i,0,h,w] = ((i*784 + h*28 + w) * 37 % 256) / 255, as float32 (k/255 exactly rounded)."""
    k = (np.arange(3 * 784, dtype=np.int64) * 37) % 256
    return torch.from_numpy((k.astype(np.float32) / np.float32(255.0)).reshape(3, 1, 28, 28))


def make_tiny(out_dir, hidden):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    mlp = freeze(TinyMLP(hidden))
    xin = tiny_input()
    xb = torch.cat([xin, load_mnist_test(125)[0]])     # 128 images for the batch checks
    specs = [
        ("tiny_plain", mlp, "the MLP alone", True, None),
        ("tiny_round", freeze(TinyRound(mlp)), "torch.round(x*7)/7, then the MLP", True, "Round"),
        ("tiny_detach", freeze(TinyDetach(mlp)), "gradient killer: z = x.detach(); "
         "mlp(z) + 0.0 * flatten(x,1).sum(1, keepdim=True); input gradient exactly 0", False, None),
        ("tiny_round_inplace", freeze(TinyRoundInplace(mlp)), "torch.round_(x*7)/7 (in place), "
         "then the MLP", False, None),
    ]
    manifest = {
        "what": "tiny masked-model fixtures for gibbon's Rust unit tests (scripts/make_masked_models.py --tiny-fixtures)",
        "torch": torch.__version__,
        "mlp": f"Flatten -> Linear(784,{hidden}) -> ReLU -> Linear({hidden},10), random init "
               "after torch.manual_seed(0), no training; input float32 (N,1,28,28)",
        "expected_input": "x[i,0,h,w] = ((i*784 + h*28 + w) * 37 % 256) / 255 as float32, i in 0..3",
        "files": {},
    }
    for name, module, what, with_onnx, need_op in specs:
        path = os.path.join(out_dir, name + ".pt")
        loaded = freeze(save_script(module, path))
        diffs = check_deterministic(loaded, module, xb)
        assert max(diffs["max_abs_diff_vs_eager_same_batch"].values()) == 0.0, (name, diffs)
        assert max(diffs["max_abs_diff_vs_own_batch128"].values()) <= 1e-6, (name, diffs)
        with torch.no_grad():
            logits = loaded(xin)
        xg = xin.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(loaded(xg), torch.tensor([0, 1, 2]), reduction="sum"), xg)
        entry = {"sha256": sha256(path), "bytes": os.path.getsize(path), "what": what,
                 "code_files_in_archive": code_files(path),
                 "batch_checks": diffs,
                 "expected_logits": logits.tolist(),
                 "ce_input_grad_abs_sum_labels_0_1_2": g.abs().sum().item()}
        manifest["files"][name + ".pt"] = entry
        print(f"{name}.pt  {entry['bytes']} bytes  grad|sum| {entry['ce_input_grad_abs_sum_labels_0_1_2']:.4g}")
        if with_onnx:
            opath = os.path.join(out_dir, name + ".onnx")
            o = export_onnx(module, opath, xb[:16], need_op)
            o.update({"sha256": sha256(opath), "bytes": os.path.getsize(opath), "what": what})
            manifest["files"][name + ".onnx"] = o
            print(f"{name}.onnx {o['bytes']} bytes  ops {o['ops']}  max|onnx-torch| {o['max_abs_diff_vs_torch_batch16']:.3g}")
    if "tiny_detach.pt" in manifest["files"]:
        assert manifest["files"]["tiny_detach.pt"]["ce_input_grad_abs_sum_labels_0_1_2"] == 0.0
        assert manifest["files"]["tiny_detach.pt"]["expected_logits"] == manifest["files"]["tiny_plain.pt"]["expected_logits"]
    with open(os.path.join(out_dir, "tiny_fixtures.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print("wrote", os.path.join(out_dir, "tiny_fixtures.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", nargs="?", help="where to write the masked SmallCNN variants")
    ap.add_argument("--tiny-fixtures", metavar="DIR", help="also write the tiny MLP fixtures here")
    ap.add_argument("--tiny-hidden", type=int, default=8, help="hidden width of the tiny MLP (default 8)")
    args = ap.parse_args()
    if not args.out_dir and not args.tiny_fixtures:
        ap.error("give OUT_DIR and/or --tiny-fixtures DIR")
    torch.set_num_threads(1)
    t0 = time.time()
    if args.out_dir:
        make_masked(args.out_dir)
    if args.tiny_fixtures:
        make_tiny(args.tiny_fixtures, args.tiny_hidden)
    print(f"done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()

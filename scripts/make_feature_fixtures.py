#!/usr/bin/env python3
"""Writes the TorchScript feature-layer fixtures in crates/gibbon/tests/fixtures/torchscript/.

`nested_traced.pt` (torch.jit.trace) and `nested_scripted.pt` (torch.jit.script) hold the same
small model with nested submodules (fixed seed), input [B, 1, 28, 28], 3 classes:

    features = Sequential(Conv2d(1, 4, 3), ReLU(), Sequential(Conv2d(4, 4, 3), ReLU()), Flatten())
    head     = Linear(4 * 24 * 24, 3)

so that submodule paths two levels deep (`features.2.0`) exercise the feature-layer shim's
inlining; the Rust test (crates/gibbon/tests/feature_layers.rs) checks the layers against each
other (relu(features.2.0) = features.2.1, features = penultimate, features.2 = features.2.1).

Run (from the repository root, with the gibbon venv's torch):

    ~/.cache/gibbon/venv/bin/python scripts/make_feature_fixtures.py
"""
import os

import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "gibbon", "tests",
                   "fixtures", "torchscript")


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()), nn.Flatten())
        self.head = nn.Linear(4 * 24 * 24, 3)

    def forward(self, x):
        return self.head(self.features(x))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    model = Nested().eval()
    example = torch.rand(1, 1, 28, 28)
    torch.jit.trace(model, example).save(os.path.join(OUT, "nested_traced.pt"))
    torch.jit.script(model).save(os.path.join(OUT, "nested_scripted.pt"))


if __name__ == "__main__":
    main()

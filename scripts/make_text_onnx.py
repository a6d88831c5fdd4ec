#!/usr/bin/env python3
"""Trains a word model on SST-2 in PyTorch with a HF `tokenizers` WordLevel tokenizer and exports
what gibbon's ONNX text path reads: model.onnx (inputs input_ids and attention_mask, int64
[batch, tokens]; output logits [batch, classes]), tokenizer.json, model.pt (the state dict) and
predictions.json (PyTorch's own probabilities on the first --n-check dev sentences, each
scored alone, unpadded: the reference gibbon's scores are compared with).

Architectures (--arch):
  cnn   the word-CNN of Kim (2014): embeddings, filter widths 3, 4, 5, ReLU, max over time,
        linear. Windows that start past the last token are masked, and 4 zero positions are
        appended inside the graph, so any text of 1 or more tokens works and the score does not
        depend on how far the batch is padded.
  mean  mean of the word embeddings over the attention mask (an EmbeddingBag), then linear.

Usage (in the project's venv; installs `tokenizers` and `onnx` there if missing):
  source scripts/env.sh
  python scripts/make_text_onnx.py --out /work/text-peer/sst2_onnx               # full size
  python scripts/make_text_onnx.py --out DIR --vocab 1500 --dim 16 --maps 16 --epochs 2   # small

The tokenizer lower-cases (normalizer Lowercase) and splits on whitespace and punctuation
(pre-tokenizer Whitespace: \\w+|[^\\w\\s]+); ids 0 and 1 are [PAD] and [UNK]; its truncation is
set to --max-len tokens, which gibbon reads as the model's maximum length (and refuses longer
texts instead of cutting them).
"""
import argparse
import csv
import json
import os
import random
import subprocess
import sys


def ensure_packages():
    missing = []
    for mod in ("tokenizers", "onnx"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


ensure_packages()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers  # noqa: E402

WIDTHS = (3, 4, 5)


def read_tsv(path):
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for row in reader:
            texts.append(row[0])
            labels.append(int(row[1]))
    return texts, labels


class KimCnn(nn.Module):
    def __init__(self, vocab, dim, maps, classes):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.convs = nn.ModuleList([nn.Conv1d(dim, maps, w) for w in WIDTHS])
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(maps * len(WIDTHS), classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.to(torch.float32)
        x = self.embed(input_ids) * mask.unsqueeze(2)
        # 4 zero positions so that every text of >= 1 token fills the widest window.
        x = F.pad(x, (0, 0, 0, max(WIDTHS) - 1)).transpose(1, 2)
        mask = F.pad(mask, (0, max(WIDTHS) - 1))
        pooled = []
        for w, conv in zip(WIDTHS, self.convs):
            h = F.relu(conv(x))
            # window t is kept when it starts on a token: t == 0 or mask[t + w - 1] == 1 ...
            # i.e. the window ends inside the text, or it is the first one.
            valid = torch.cat([torch.ones_like(mask[:, :1]), mask[:, w:]], dim=1)
            pooled.append((h * valid.unsqueeze(1)).amax(dim=2))
        return self.out(self.drop(torch.cat(pooled, dim=1)))


class MeanBag(nn.Module):
    def __init__(self, vocab, dim, classes):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.out = nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.to(torch.float32).unsqueeze(2)
        summed = (self.embed(input_ids) * mask).sum(dim=1)
        return self.out(summed / mask.sum(dim=1).clamp(min=1.0))


def train_tokenizer(texts, vocab_size, max_len):
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=["[PAD]", "[UNK]"]
    )
    tok.train_from_iterator(texts, trainer)
    tok.enable_truncation(max_length=max_len)
    return tok


def encode(tok, texts):
    """Ids padded to the longest text of the batch with [PAD] (id 0), and the mask."""
    ids = [tok.encode(t).ids for t in texts]
    # a text without tokens is one [PAD] with mask 0 (as gibbon runs it)
    lens = [len(i) for i in ids]
    ids = [i or [0] for i in ids]
    longest = max(len(i) for i in ids)
    input_ids = torch.zeros(len(ids), longest, dtype=torch.int64)
    mask = torch.zeros(len(ids), longest, dtype=torch.int64)
    for k, i in enumerate(ids):
        input_ids[k, : len(i)] = torch.tensor(i)
        mask[k, : lens[k]] = 1
    return input_ids, mask


def train(model, tok, texts, labels, args):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    order = list(range(len(texts)))
    rng = random.Random(args.seed)
    for epoch in range(args.epochs):
        model.train()
        rng.shuffle(order)
        total = 0.0
        for b in range(0, len(order), args.batch):
            idx = order[b : b + args.batch]
            ids, mask = encode(tok, [texts[i] for i in idx])
            y = torch.tensor([labels[i] for i in idx])
            loss = F.cross_entropy(model(ids, mask), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: train loss {total / len(texts):.4f}", file=sys.stderr)


@torch.no_grad()
def probabilities(model, tok, texts):
    model.eval()
    out = []
    for t in texts:  # one at a time, unpadded: the model's own answer on the text
        ids, mask = encode(tok, [t])
        out.append(F.softmax(model(ids, mask), dim=1)[0].tolist())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../shared/data/sst2"))
    p.add_argument("--out", required=True)
    p.add_argument("--arch", choices=["cnn", "mean"], default="cnn")
    p.add_argument("--vocab", type=int, default=20000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--maps", type=int, default=64)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--train-limit", type=int, default=0, help="first N train sentences (0: all)")
    p.add_argument("--n-check", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    texts, labels = read_tsv(os.path.join(args.data, "train.tsv"))
    if args.train_limit:
        texts, labels = texts[: args.train_limit], labels[: args.train_limit]
    dev_texts, dev_labels = read_tsv(os.path.join(args.data, "dev.tsv"))
    tok = train_tokenizer(texts, args.vocab, args.max_len)
    vocab = tok.get_vocab_size()
    if args.arch == "cnn":
        model = KimCnn(vocab, args.dim, args.maps, 2)
    else:
        model = MeanBag(vocab, args.dim, 2)
    train(model, tok, texts, labels, args)
    probs = probabilities(model, tok, dev_texts)
    preds = [max(range(2), key=lambda c: p[c]) for p in probs]
    acc = sum(int(a == b) for a, b in zip(preds, dev_labels)) / len(dev_labels)
    print(f"dev accuracy {acc:.4f} on {len(dev_labels)} sentences (PyTorch)", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    torch.save(model.state_dict(), os.path.join(args.out, "model.pt"))
    model.eval()
    ids, mask = encode(tok, ["a charming and often affecting journey", "bleak"])
    torch.onnx.export(
        model,
        (ids, mask),
        os.path.join(args.out, "model.onnx"),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                      "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    n = min(args.n_check, len(dev_texts))
    record = {
        "arch": args.arch, "vocab": vocab, "dim": args.dim, "maps": args.maps,
        "max_len": args.max_len, "epochs": args.epochs, "seed": args.seed,
        "torch": torch.__version__, "dev_accuracy": acc, "dev_n": len(dev_labels),
        "texts": dev_texts[:n], "labels": dev_labels[:n], "probabilities": probs[:n],
        "dev_predictions": preds,
    }
    with open(os.path.join(args.out, "predictions.json"), "w") as f:
        json.dump(record, f)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

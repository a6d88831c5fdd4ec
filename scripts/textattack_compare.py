"""TextAttack 0.3.11's DeepWordBugGao2018 recipe against a gibbon SST-2 word-CNN.

The model is gibbon's own (`gibbon text train --arch cnn`), re-implemented here in PyTorch from
its saved folder (model.json + weights.safetensors): the same vocabulary, the same tokenizer
(UAX #29 word boundaries through the `regex` module's WORD flag, lower-cased, segments with an
alphanumeric character kept, at most max_len words, padded to 5) and the same layers (embedding,
conv widths 3/4/5, ReLU, max over time, linear, softmax). `check` compares its probabilities with
`gibbon text score` on the dev set (max |diff| must be under 1e-4) and `attack` runs TextAttack.

Run through scripts/textattack_compare.sh (it builds the venv and passes the paths).
"""

import argparse
import json
import math
import sys
import time

import regex
import torch
from safetensors.torch import load_file

WIDTHS = (3, 4, 5)


def word_tokens(text):
    """gibbon's `word_tokens`: UAX #29 segments with an alphanumeric character, lower-cased."""
    parts = [p for p in regex.split(r"\b", text, flags=regex.WORD | regex.V1) if p]
    # `regex` keeps a leading/trailing apostrophe or full stop on a word ("'em"); UAX #29 (and
    # unicode-segmentation) makes it a segment of its own, which is not a word.
    parts = [p.strip("'.:;,\u2018\u2019") for p in parts]
    return [p.lower() for p in parts if any(c.isalnum() for c in p)]


class GibbonCnn(torch.nn.Module):
    """The Kim (2014) word-CNN exactly as gibbon's `TextModel` (crates/gibbon/src/text/model.rs)."""

    def __init__(self, folder):
        super().__init__()
        meta = json.load(open(f"{folder}/model.json"))
        arch = meta["arch"]
        if arch["arch"] != "cnn":
            sys.exit(f"{folder}: not a gibbon cnn model")
        self.index = {w: i for i, w in enumerate(arch["vocab"])}
        self.max_len = arch["max_len"]
        w = load_file(f"{folder}/weights.safetensors")
        self.embed = torch.nn.Embedding.from_pretrained(w["embed.weight"], padding_idx=0)
        self.convs = torch.nn.ModuleList()
        for k in WIDTHS:
            conv = torch.nn.Conv1d(arch["dim"], arch["maps"], k)
            conv.weight.data, conv.bias.data = w[f"conv{k}.weight"], w[f"conv{k}.bias"]
            self.convs.append(conv)
        self.out = torch.nn.Linear(arch["maps"] * len(WIDTHS), len(meta["class_names"]))
        self.out.weight.data, self.out.bias.data = w["out.weight"], w["out.bias"]
        self.eval()

    def encode(self, text):
        ids = [self.index.get(t, 1) for t in word_tokens(text)[: self.max_len]]
        return ids + [0] * max(0, 5 - len(ids))

    @torch.no_grad()
    def probabilities(self, texts):
        rows = []
        for start in range(0, len(texts), 256):
            enc = [self.encode(t) for t in texts[start : start + 256]]
            n = max(len(e) for e in enc) + max(WIDTHS)  # as gibbon: batch-independent scores
            ids = torch.tensor([e + [0] * (n - len(e)) for e in enc])
            x = self.embed(ids).transpose(1, 2)
            pooled = [c(x).relu().amax(2) for c in self.convs]
            rows.append(self.out(torch.cat(pooled, 1)).softmax(1))
        return torch.cat(rows).numpy()


def load_tsv(path, n):
    rows = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            text, label = line.rstrip("\n").rsplit("\t", 1)
            rows.append((text, int(label)))
    return rows[:n] if n else rows


def clopper_pearson(k, n, alpha=0.05):
    from scipy.stats import beta

    lo = 0.0 if k == 0 else beta.ppf(alpha / 2, k, n - k + 1)
    hi = 1.0 if k == n else beta.ppf(1 - alpha / 2, k + 1, n - k)
    return [float(lo), float(hi)]


def check(args):
    """Probabilities of this port vs `gibbon text score` (a JSON file of rows)."""
    model = GibbonCnn(args.model)
    texts = [t for t, _ in load_tsv(args.data, args.n)]
    ours = model.probabilities(texts)
    theirs = json.load(open(args.gibbon_scores))
    diff = max(abs(a - b) for r, s in zip(ours.tolist(), theirs) for a, b in zip(r, s))
    print(f"port vs gibbon on {len(texts)} texts: max |p diff| = {diff:.2e}")
    if len(theirs) != len(texts) or not diff < 1e-4:
        sys.exit("the PyTorch port does not reproduce gibbon's probabilities")


def attack(args):
    import textattack
    from textattack.attack_recipes import DeepWordBugGao2018
    from textattack.attack_results import SkippedAttackResult, SuccessfulAttackResult
    from textattack.constraints.pre_transformation import StopwordModification
    from textattack.models.wrappers import ModelWrapper

    torch.set_num_threads(1)
    model = GibbonCnn(args.model)

    class Wrapper(ModelWrapper):
        def __init__(self, m):
            self.model = m

        def __call__(self, text_list):
            return self.model.probabilities(list(text_list))

    attack = DeepWordBugGao2018.build(Wrapper(model))
    if args.stopwords:
        # The same recipe with another stopword list (the equal-constraint run): the recipe's
        # goal, transformation, search and other constraints, rebuilt into a new Attack.
        from textattack import Attack

        words = [w for w in open(args.stopwords, encoding="utf-8").read().split("\n") if w]
        constraints = [
            StopwordModification(stopwords=words) if isinstance(c, StopwordModification) else c
            for c in attack.pre_transformation_constraints + attack.constraints
        ]
        attack = Attack(attack.goal_function, constraints, attack.transformation, attack.search_method)
    print(attack, file=sys.stderr)
    rows = load_tsv(args.data, args.n)
    textattack.shared.utils.set_seed(args.seed)
    records, start = [], time.perf_counter()
    for i, (text, label) in enumerate(rows):
        t0 = time.perf_counter()
        r = attack.attack(text, label)
        rec = {"index": i, "label": label, "seconds": time.perf_counter() - t0}
        if isinstance(r, SkippedAttackResult):
            rec.update(status="skipped")
        else:
            orig, adv = r.original_result.attacked_text, r.perturbed_result.attacked_text
            rec.update(
                status="success" if isinstance(r, SuccessfulAttackResult) else "failed",
                queries=r.perturbed_result.num_queries,
                words_changed=len(orig.all_words_diff(adv)),
                n_words=len(orig.words),
                adversarial=adv.text,
            )
        records.append(rec)
    seconds = time.perf_counter() - start
    attacked = [r for r in records if r["status"] != "skipped"]
    wins = [r for r in attacked if r["status"] == "success"]
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
    summary = {
        "n": len(rows),
        "attacked": len(attacked),
        "successes": len(wins),
        "success_rate": len(wins) / max(1, len(attacked)),
        "success_rate_ci95": clopper_pearson(len(wins), len(attacked)),
        "mean_words_changed": mean([r["words_changed"] for r in wins]),
        "mean_queries_per_success": mean([r["queries"] for r in wins]),
        "mean_queries": mean([r["queries"] for r in attacked]),
        "seconds": seconds,
    }
    print(json.dumps(summary), file=sys.stderr)
    doc = {
        "tool": f"textattack {textattack.__version__ if hasattr(textattack, '__version__') else '0.3.11'}",
        "recipe": "DeepWordBugGao2018" + (" (stopwords from " + args.stopwords + ")" if args.stopwords else ""),
        "model": args.model,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "summary": summary,
        "per_sample": records,
    }
    json.dump(doc, open(args.out, "w"), indent=1)


def stopwords(_args):
    """gibbon's STOPWORDS constant, read from its source, one word a line."""
    src = open("crates/gibbon/src/text/constraints.rs", encoding="utf-8").read()
    body = src.split("pub const STOPWORDS: &[&str] = &[", 1)[1].split("];", 1)[0]
    words = regex.findall(r'"([^"]*)"', body)
    if len(words) < 100:
        sys.exit("could not read gibbon's STOPWORDS")
    print("\n".join(words))


def summary(args):
    """One JSON: gibbon's recipes and TextAttack's runs side by side, TextAttack's adversarial
    texts re-scored by gibbon itself."""
    import subprocess

    g = json.load(open(args.gibbon_json))
    rows = {}
    for r in g["text_attack"]:
        s = r["summary"]
        rows["gibbon " + r["name"]] = {
            k: s[k]
            for k in ["n", "attacked", "successes", "success_rate", "success_rate_ci95",
                      "mean_words_changed", "mean_queries_per_success", "mean_queries", "seconds"]
        }
    for path in args.ta_json:
        t = json.load(open(path))
        wins = [r for r in t["per_sample"] if r["status"] == "success"]
        out = subprocess.run(
            [args.gibbon_bin, "text", "score", "--model", args.model, "--threads", "1"],
            input=json.dumps([r["adversarial"] for r in wins]) + "\n",
            capture_output=True, text=True, check=True,
        ).stdout
        probs = json.loads(out) if wins else []
        confirmed = sum(
            1 for r, p in zip(wins, probs) if max(range(len(p)), key=p.__getitem__) != r["label"]
        )
        row = dict(t["summary"])
        row["successes_confirmed_by_gibbon_score"] = confirmed
        rows["textattack " + t["recipe"]] = row
    doc = {
        "model": args.model,
        "threads": 1,
        "note": "same first-N dev sentences, back to back; seconds = wall time of the whole run "
        "(gibbon: its attack loop incl. model calls; TextAttack: Attack.attack over the texts with "
        "the PyTorch port of the same model)",
        "runs": rows,
    }
    json.dump(doc, open(args.out, "w"), indent=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["check", "attack", "stopwords", "summary"])
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--gibbon-json")
    p.add_argument("--gibbon-bin")
    p.add_argument("--ta-json", nargs="*")
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--gibbon-scores")
    p.add_argument("--stopwords", help="a stopword file replacing NLTK's (one word a line)")
    p.add_argument("--seed", type=int, default=765)
    p.add_argument("--out")
    args = p.parse_args()
    {"check": check, "attack": attack, "stopwords": stopwords, "summary": summary}[args.mode](args)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Augmentation training, measured: the spam filter and the prompt-injection guard (linear) trained
# without and with `--augment`, then attacked with the character-level recipes, without and with
# the normalization defense (the adaptive setting: the attack runs against the defended system).
# Usage: scripts/text_augment_eval.sh [OUT_DIR]   (default out/augment)
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$GIBBON_ROOT"
OUT="${1:-out/augment}"
D=../shared/data
AUG="deepwordbug,homoglyph,invisible,bad-characters"
RECIPES="deepwordbug,homoglyph,invisible,bad-characters,deepwordbug-label"
mkdir -p "$OUT"
cargo build --release --workspace --quiet
G="$CARGO_TARGET_DIR/release/gibbon"
export OMP_NUM_THREADS=1

SPAM=$D/sms_spam_collection/SMSSpamCollection
GTR=$D/prompt_injections_deepset/deepset-prompt-injections-train.jsonl
GTE=$D/prompt_injections_deepset/deepset-prompt-injections-test.jsonl
for variant in plain aug; do
  extra=()
  [ "$variant" = aug ] && extra=(--augment "$AUG")
  "$G" text train --data "$SPAM" --arch linear --epochs 10 --lr 0.1 --threads 1 \
    --out "$OUT/spam-linear-$variant" "${extra[@]}"
  "$G" text train --data "$GTR" --test "$GTE" --arch linear --epochs 10 --threads 1 \
    --out "$OUT/guard-linear-$variant" "${extra[@]}"
  for norm in "" --normalize; do
    "$G" text attack --model "$OUT/spam-linear-$variant" --data "$SPAM" --model-test-split \
      --only-label spam --n 1000 --recipe "$RECIPES" $norm --threads 1 \
      --out "$OUT/spam-linear-$variant-attack$norm.json"
    "$G" text attack --model "$OUT/guard-linear-$variant" --data "$GTE" --only-label 1 --n 60 \
      --fpr 0.05 --recipe "$RECIPES" $norm --threads 1 \
      --out "$OUT/guard-linear-$variant-attack$norm.json"
  done
  "$G" text guard --model "$OUT/guard-linear-$variant" --data "$GTE" --fpr 0.05 --threads 1 \
    --out "$OUT/guard-linear-$variant-guard.json"
done

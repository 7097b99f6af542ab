#!/usr/bin/env bash
# The paper's protocol on the embedded default model (run after `make findings`, whose text
# scan and en,hi pruned model it compares against): an answer-signal scan on the cloze set,
# compared with the text-NLL scan; the language-switch scan; answers of the pruned model
# against the original; a judge run against a local OpenAI-compatible server
# (`transformers serve` with the default model and Gemma's chat turn format, on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/protocol}
FINDINGS=${FINDINGS:-runs/findings}
LANGS=${LANGS:-en,hi,fr,de,zh,ar}
L=.venv/bin/langheads
PY=.venv/bin/python
mkdir -p "$OUT"
: > "$OUT/timings.txt"
step() {
  local name=$1; shift
  local start=$SECONDS
  echo "== $name" >&2
  "$@" > "$OUT/$name.log"
  echo "$name $((SECONDS - start))" >> "$OUT/timings.txt"
}
step answer_scan $L scan --model default --signal answer --data cloze --languages "$LANGS" --texts 6 \
    --out "$OUT/answer" --quiet --overwrite
step compare $L compare "$OUT/answer" "$FINDINGS/exact"
step switch_scan $L scan --model default --method switch --languages "$LANGS" --texts 6 --out "$OUT/switch" \
    --quiet --overwrite
$PY - "$OUT/switch" > "$OUT/switch_top.txt" <<'PY'
import sys
import pandas as pd
s = pd.read_csv(f"{sys.argv[1]}/scores.csv")
print("base switch rate per language:", s.groupby("language")["base_nll"].first().round(3).to_dict())
print(s.sort_values("score", ascending=False).head(8)[["layer", "head", "language", "score", "ci_low", "ci_high"]]
      .to_string(index=False))
PY
step qa $L evaluate --model "$FINDINGS/en-hi" --baseline default --languages "$LANGS" --qa cloze \
    --new-tokens 12 --out "$OUT/qa" --overwrite
# a judge: the default model behind transformers serve, with Gemma's chat turns as its template
JUDGE_MODEL="$OUT/judge-model"
$PY - "$JUDGE_MODEL" <<'PY'
import sys, shutil
from pathlib import Path
from transformers import AutoTokenizer
from langheads.models import load_model
loaded = load_model("default")
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
loaded.model.save_pretrained(out)
tok = loaded.tokenizer
tok.chat_template = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                     "else 'user' }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
                     "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
tok.save_pretrained(out)
PY
PORT=${PORT:-18931}
.venv/bin/transformers serve "$JUDGE_MODEL" --host 127.0.0.1 --port "$PORT" --device cpu > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 90); do curl -sf "127.0.0.1:$PORT/health" > /dev/null && break; sleep 2; done
step judge $L evaluate --model "$FINDINGS/en-hi" --baseline default --languages en,hi --qa cloze --new-tokens 12 \
    --judge "http://127.0.0.1:$PORT/v1" --judge-model "$JUDGE_MODEL" --judge-cache "$OUT/verdicts.jsonl" \
    --out "$OUT/judge" --overwrite
echo "total $SECONDS" >> "$OUT/timings.txt"
cat "$OUT/timings.txt"

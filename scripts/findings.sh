#!/usr/bin/env bash
# Regenerates every number and figure of docs/findings.md (`make findings`):
# an exact scan of Gemma 3 270M on 24 bundled languages, the same map by the adaptive scan
# (`--adaptive`: kinds and wall time side by side with the full scan), the full scan's scores
# under the LAHIS and FDR rules (reusing every scored unit), an attribution scan to compare methods, `--keep en,hi`
# pruning with vocabulary trimming, its evaluation on the report texts, the report page, and
# docs/findings/ (FINDINGS.md with the numbers, the figures docs/findings.md shows).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/findings}
LANGS=${LANGS:-en,de,nl,sv,fr,es,it,pt,ru,uk,pl,cs,hi,bn,ur,fa,ar,he,tr,fi,zh,ja,ko,vi}
L=.venv/bin/langheads
SCAN=(--model default --languages "$LANGS" --texts 8 --max-tokens 48 --quiet --overwrite)
mkdir -p "$OUT"
: > "$OUT/timings.txt"
step() {  # step NAME COMMAND...: run it, log its wall time
  local name=$1; shift
  local start=$SECONDS
  echo "== $name" >&2
  "$@" > "$OUT/$name.log"
  echo "$name $((SECONDS - start))" >> "$OUT/timings.txt"
}
step scan_exact $L scan "${SCAN[@]}" --out "$OUT/exact"
step scan_adaptive $L scan "${SCAN[@]}" --adaptive --out "$OUT/adaptive"
step rule_lahis $L scan "${SCAN[@]}" --rule lahis --out "$OUT/exact-lahis" --store "$OUT/exact.units"
step rule_fdr $L scan "${SCAN[@]}" --fdr 0.05 --out "$OUT/exact-fdr" --store "$OUT/exact.units"
step scan_attribution $L scan "${SCAN[@]}" --method attribution --out "$OUT/attribution"
step prune $L prune --scan "$OUT/exact" --keep en,hi --trim-vocab --out "$OUT/en-hi" --overwrite --quiet
step evaluate $L evaluate --model "$OUT/en-hi" --baseline default --languages en,hi,fr,de,zh,ar \
    --out "$OUT/eval" --overwrite
step report $L report "$OUT/exact" --prune "$OUT/en-hi" --eval "$OUT/eval" --compare "$OUT/attribution" \
    --out "$OUT/report" --overwrite
.venv/bin/python scripts/findings.py "$OUT" docs/findings
echo "total $SECONDS" >> "$OUT/timings.txt"
cat "$OUT/timings.txt"

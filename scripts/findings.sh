#!/usr/bin/env bash
# Regenerates every number and figure of docs/findings.md for one model (`make findings` runs it
# for both real models, then sets them side by side): an exact scan on LANGS, the same map by the
# adaptive scan (`--adaptive`: kinds and wall time side by side with the full scan), the full
# scan's scores under the LAHIS and FDR rules (reusing every scored unit), an attribution and a
# LAHIS-score scan to compare methods, a `--keep KEEP` pruning with vocabulary trimming, its
# evaluation on the report texts, the report page, and DOCS (FINDINGS.md with the numbers, the
# figures docs/findings.md shows).
# MODEL (default: default), LANGS, TEXTS, MAX_TOKENS, KEEP, EVAL_LANGS, OUT, DOCS set what is mapped and where.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-default}
OUT=${OUT:-runs/findings}
DOCS=${DOCS:-docs/findings}
LANGS=${LANGS:-en,de,nl,sv,fr,es,it,pt,ru,uk,pl,cs,hi,bn,ur,fa,ar,he,tr,fi,zh,ja,ko,vi}
TEXTS=${TEXTS:-8}
MAX_TOKENS=${MAX_TOKENS:-48}
KEEP=${KEEP:-en,hi}
EVAL_LANGS=${EVAL_LANGS:-$LANGS}  # the languages the pruning is evaluated on (report texts)
L=.venv/bin/langheads
SCAN=(--model "$MODEL" --languages "$LANGS" --texts "$TEXTS" --max-tokens "$MAX_TOKENS" --quiet --overwrite)
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
step scan_lahis $L scan "${SCAN[@]}" --method lahis --out "$OUT/lahis"
step prune $L prune --scan "$OUT/exact" --keep "$KEEP" --trim-vocab --out "$OUT/pruned" --overwrite --quiet
step evaluate $L evaluate --model "$OUT/pruned" --baseline "$MODEL" --languages "$EVAL_LANGS" --out "$OUT/eval" --overwrite
step report $L report "$OUT/exact" --prune "$OUT/pruned" --eval "$OUT/eval" --compare "$OUT/attribution" \
    --out "$OUT/report" --overwrite
.venv/bin/python scripts/findings.py "$OUT" "$DOCS"
echo "total $SECONDS" >> "$OUT/timings.txt"
cat "$OUT/timings.txt"

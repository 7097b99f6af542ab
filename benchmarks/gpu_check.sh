#!/usr/bin/env bash
# The one prepared GPU check: on a machine with one CUDA GPU, PyTorch and transformers, with
# nothing fetched, in under 8 minutes. Prints one table at the end and writes every log to
# $OUT (default benchmarks/results/gpu_check/). Rows:
#   1. Llama-3-8B-shaped random model (bf16), 4,096 tokens: the exact map (eager and compiled)
#      and attribution, per 4,096 tokens (benchmarks/bench_scan.py --synthetic llama-8b)
#   2. a 4-bit (bitsandbytes) exact scan of the same width (4 of its 32 layers), when
#      bitsandbytes is importable there (else the row says so)
#   3. the same scan under a 1-process torchrun (NCCL)
#   4. --adaptive against the full exact scan of the 4-layer model (benchmarks/adaptive_vs_full.py)
# Wheels a machine lacks (bitsandbytes; transformers >= 5.23) can travel in .whl/: run
# benchmarks/gpu_wheels.sh here first; this script installs them into /tmp/site if .whl/ exists.
# SMOKE=1 runs the same steps on the CPU with small shapes (to check the script, not to time).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
SMALL=/tmp/llama8b-4layers
DEVICE=cuda DTYPE=bfloat16 MAP=(--texts 32 --tokens 128 --batch-tokens 32768 --chunk-tokens 8192) WIDTH=() TOKENS=128 LIMIT=1
if [ "${SMOKE:-0}" = 1 ]; then  # the script's logic on a CPU: small shapes, float32, gloo
  DEVICE=cpu DTYPE=float32 MAP=(--layers 2 --hidden 256 --heads 4 --kv-heads 2 --intermediate 512 --vocab 2048
    --texts 4 --tokens 32) WIDTH=(hidden_size=256 intermediate_size=512 num_attention_heads=4 num_key_value_heads=2
    vocab_size=2048 head_dim=64) TOKENS=32 LIMIT=20
fi
start=$SECONDS
step() {  # step NAME TIMEOUT COMMAND...: run it with a time limit, keep its log, note its wall time
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout $((limit * LIMIT)) "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - t0)) s" >> "$OUT/steps.txt"
}
: > "$OUT/steps.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} > "$OUT/machine.txt" 2>&1

step map 240 $PY benchmarks/bench_scan.py --synthetic llama-8b --device $DEVICE --dtype $DTYPE "${MAP[@]}" \
  --sample-layers 1 --compile
step save 90 $PY - <<EOF
import torch
from langheads import synthetic
shape = dict(synthetic.SHAPES["llama-8b"]); shape.pop("arch"); shape["num_hidden_layers"] = 4
shape.update({k: int(v) for k, v in (kv.split("=") for kv in "${WIDTH[*]}".split())})
tok = synthetic.byte_tokenizer()
with torch.device("$DEVICE"):
    model = synthetic.tiny("llama", dtype=getattr(torch, "$DTYPE"), max_position_embeddings=4096, **shape)
model.save_pretrained("$SMALL"); tok.save_pretrained("$SMALL")
print("saved", sum(p.numel() for p in model.parameters()), "parameters")
EOF
SCAN=(--model "$SMALL" --languages en,hi,fr,de --texts 8 --max-tokens $TOKENS --device $DEVICE --dtype $DTYPE --quiet
  --overwrite)
if [ $DEVICE = cuda ] && $PY -c "import bitsandbytes" 2>/dev/null; then
  step scan_4bit 120 $PY -m langheads scan "${SCAN[@]}" --load-in 4bit --out /tmp/gc/4bit
else
  echo "scan_4bit skipped: bitsandbytes is not importable here (benchmarks/gpu_wheels.sh)" >> "$OUT/steps.txt"
fi
step torchrun 120 torchrun --standalone --nproc-per-node 1 -m langheads scan "${SCAN[@]}" --out /tmp/gc/torchrun
mkdir -p /tmp/gc
step adaptive 150 $PY benchmarks/bench_scan.py --adaptive --model "$SMALL" --languages en,hi,fr,de --texts 8 \
  --tokens $TOKENS --device $DEVICE --dtype $DTYPE --work /tmp/gc

{
  echo "== machine"; cat "$OUT/machine.txt"
  echo "== steps (name, exit status, wall time)"; cat "$OUT/steps.txt"
  echo "== 1. Llama-3-8B shape, bf16, 4,096 tokens"; grep -E "^\(|^per 4,096|largest|compiling" "$OUT/map.log"
  echo "== 2-3. 4-layer model of the same width, 4 languages x 8 texts x 128 tokens"
  for f in scan_4bit torchrun; do [ -f "$OUT/$f.log" ] && echo "$f: $(grep -E '^kinds|^wrote' "$OUT/$f.log" | tr '\n' ' ')"; done
  echo "== 4. --adaptive against the full exact scan"; sed -n '/^scan /,$p' "$OUT/adaptive.log"
  echo "total $((SECONDS - start)) s"
} | tee "$OUT/table.txt"

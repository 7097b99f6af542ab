#!/usr/bin/env bash
# Create .venv at the repository root with everything the tool and its tests need.
# torch is pinned to 2.13.0, which this kind of machine's pip resolves to a CPU wheel on disk;
# pyproject.toml only asks for a range, so users with GPUs keep their own torch build.
# EXTRAS (default "test") names the optional extras to install, e.g. EXTRAS=test,llamacpp.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [[ ",${EXTRAS:-test}," == *",llamacpp,"* ]]; then
  # llama.cpp for x86-64-v3 (AVX2, FMA, F16C), not -march=native. A native build on a CPU with AMX
  # compiles ggml's AMX kernels, which llama.cpp then prefers for quantized weights: there every
  # quantized Gemma 3 file (the default model's own Q4_K_M, our q8_0) crashed in llama_decode
  # while f16/f32 ran (../shared/FACTS.md; llama.cpp issue 20824, a segfault in
  # ggml_backend_amx_mul_mat). Without native tuning no AMX code is built and the library runs on
  # any x86-64 CPU of the last decade. A build that has AMX (or none yet) is rebuilt, never reused
  # from pip's wheel cache. Set CMAKE_ARGS yourself to build otherwise.
  if [ -z "${CMAKE_ARGS:-}" ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    built=$(.venv/bin/python -c "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())" 2>/dev/null || true)
    if [ -z "$built" ] || [[ "$built" == *AMX* ]] || [[ "$built" == *AVX512* ]]; then  # none yet, or a native build
      .venv/bin/python -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "llama-cpp-python>=0.3.36"
    fi
  fi
fi
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS:-test}]"
.venv/bin/python -c "import langheads, torch, transformers; print('langheads', langheads.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

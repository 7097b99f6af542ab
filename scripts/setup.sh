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
.venv/bin/python -m pip install --quiet -e ".[${EXTRAS:-test}]"
.venv/bin/python -c "import langheads, torch, transformers; print('langheads', langheads.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

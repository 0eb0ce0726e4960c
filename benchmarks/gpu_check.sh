#!/usr/bin/env bash
# One command for a GPU machine (H200 or A10G): CUDA tests, decode-step figures, ours vs the original
# pipeline and the continuous-vs-static Poisson load at bark-small shapes, in one markdown report.
# Budget: under 9 minutes (the step timeouts add up to 540 s; a step that fails or times out is noted in
# the report and the rest still run).
#
#   benchmarks/gpu_check.sh [REPORT.md]        # default: benchmarks/gpu-check-<date>.md
#
# Random bark-small-shaped weights are built locally (no hub access needed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
REPORT=${1:-benchmarks/gpu-check-$(date -u +%Y%m%dT%H%M%SZ).md}
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"

section() {  # section TITLE TIMEOUT_S COMMAND...
  local title=$1 limit=$2; shift 2
  echo "== $title" >&2
  {
    echo; echo "## $title"; echo; echo "\`$*\`"; echo; echo '```'
  } >>"$REPORT"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -e "Warning" -e "Loading weights" -e "USDT" | tail -n 80 >>"$REPORT"
  local status=${PIPESTATUS[0]}
  { echo '```'; echo; echo "exit status $status after $((SECONDS - started)) s"; } >>"$REPORT"
}

{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)"
  echo "- torch: $($PY -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
} >"$REPORT"

$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
  echo "torch sees no CUDA device: nothing to check" | tee -a "$REPORT"; exit 1; }

section "CUDA tests (graph capture and replay, static decoder and continuous rows)" 100 \
  $PY -m pytest -q -x tests/generation/test_cuda_graphs.py tests/generation/test_decoding.py tests/generation/test_continuous_engine.py tests/generation/test_fine_stage.py -k "cuda or graph"
section "Decode steps/s, bark-small shapes, greedy" 70 \
  $PY benchmarks/decode_steps.py --size small --batches 1 8 32 --semantic-tokens 128 --repeats 2
section "Decode steps/s, bark-small shapes, sampling" 40 \
  $PY benchmarks/decode_steps.py --size small --batches 1 32 --semantic-tokens 128 --repeats 2 --sample
section "Ops, CUDA kernels and host time per semantic step, before/after (issue #14)" 40 \
  $PY benchmarks/decode_steps.py --size small --profile-step --batches 1 8 32
section "Fine stage: transformers per chunk vs ours per chunk vs ours batched (bark-small shapes)" 60 \
  $PY benchmarks/fine_stage.py --size small --device cuda --rows 1 8 32 --repeats 3
section "Ours vs the original pipeline, bark-small shapes" 70 \
  $PY benchmarks/original_vs_ours.py --mode pipeline --size small --repeats 1
section "Continuous vs static: concurrency, short behind long, Poisson load (bark-small shapes)" 160 \
  $PY benchmarks/continuous_load.py --size small --device cuda --clients 4 16 --rates 1 3 --duration 15 \
    --tokens-per-word 20

echo "report: $REPORT" >&2

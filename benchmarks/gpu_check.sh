#!/usr/bin/env bash
# The project's one GPU check: CUDA tests, the real loop's iteration against the captured block step,
# one 1-minute request (ours vs the original pipeline), a concurrency table and continuous vs static
# under Poisson load, at bark-small shapes (random weights, built locally: no hub), in one markdown
# report. It runs on a bare GPU machine: the machine's own CUDA torch, no network.
#
#   benchmarks/gpu_check.sh [--wheelhouse DIR] [--report FILE] [--budget SECONDS] [--device cuda|cpu] [--quick]
#
#   --wheelhouse DIR  wheels made by `scripts/wheelhouse.sh DIR` (no network needed): installed into a
#                     virtual environment that sees the machine's own packages behind its own, so pip
#                     resolves against the CUDA torch already there and installs only what is missing or
#                     too old. (`pip install --target` would reinstall every dependency beside it,
#                     shadowing the machine's CUDA-matched stack.) The machine's python: $PYTHON, else
#                     python3. Without --wheelhouse: $PYTHON, else .venv/bin/python, else python3.
#   --report FILE     default benchmarks/gpu-check-<UTC time>.md
#   --budget SECONDS  wall time for everything (default 420). Each section gets its share of what is left
#                     (so a section that finishes early leaves more to the next), sizes its run from that
#                     and from a measured model load (durations), and, if cut off, says so in the report.
#   --device cpu --quick  every section on tiny shapes with short runs: how CI tests this script.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELHOUSE="" REPORT="" BUDGET=420 DEVICE=cuda QUICK=0
while [ $# -gt 0 ]; do
  case $1 in
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    --report) REPORT=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
REPORT=${REPORT:-benchmarks/gpu-check-$(date -u +%Y%m%dT%H%M%SZ).md}
STARTED=$SECONDS

if [ "$QUICK" = 1 ]; then
  SIZE=tiny TOKENS=3 ROWS="1 8" CLIENTS="1 2 4" RATES="2" TEST_FILTER="graph and not cuda"
else
  SIZE=small TOKENS=20 ROWS="1 8 32" CLIENTS="1 4 8 16 32" RATES="2 4" TEST_FILTER="cuda or graph"
fi

# -- Python: the machine's torch, plus our wheels where asked ----------------------------------------
if [ -n "$WHEELHOUSE" ]; then
  VENV=${TMPDIR:-/tmp}/bark-gpu-check-venv
  BASE=${PYTHON:-python3}
  # A venv that sees the machine interpreter's packages (its CUDA torch) behind its own: a .pth file
  # names them (--system-site-packages would not, when the machine's python is itself a venv).
  $BASE -m venv "$VENV" || exit 1
  $BASE -c 'import site; print("\n".join(site.getsitepackages()))' \
    >"$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/machine-packages.pth"
  VERSION=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  WHEELS=$WHEELHOUSE/py$VERSION  # scripts/wheelhouse.sh keeps one folder per Python
  [ -d "$WHEELS" ] || WHEELS=$WHEELHOUSE
  PIP=("$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation)
  # The project runs from this clone (its scripts and pytest put it on sys.path): only its pins go in.
  if ! "${PIP[@]}" -r "$WHEELHOUSE/requirements.txt" 2>"$VENV.log"; then
    # A wheelhouse cut to what this machine lacks (--exclude; e.g. without av, which only the mp3/opus
    # encoders load) cannot satisfy pip's resolver: install its wheels as they are, then say what is unmet.
    echo "gpu_check.sh: a full install from $WHEELHOUSE failed ($(tail -n 1 "$VENV.log")); installing its wheels as they are" >&2
    "${PIP[@]}" --no-deps "$WHEELS"/*.whl \
      || { echo "gpu_check.sh: installing from $WHEELHOUSE failed" >&2; exit 1; }
  fi
  UNMET=$("$VENV/bin/python" -m pip check 2>&1 | grep -v "^No broken" || true)
  PY=$VENV/bin/python
elif [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- device: $DEVICE; GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)"
  echo "- torch: $($PY -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1)"
  echo "- shapes: $SIZE (random weights); budget: $BUDGET s$([ "$QUICK" = 1 ] && echo ', quick')"
  [ -n "${UNMET:-}" ] && echo "- requirements unmet after the wheelhouse install (pip check): $(echo "$UNMET" | tr '\n' ';')"
} >"$REPORT"

if [ "$DEVICE" = cuda ] && ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "torch sees no CUDA device: nothing to check" | tee -a "$REPORT"
  exit 1
fi

left() { echo $((BUDGET - (SECONDS - STARTED))); }

# Shares of the budget, in the order the sections run; a section may use what earlier ones left.
SHARES_LEFT=100
take_share() {  # take_share SHARE: sets `limit`, the next section's seconds: its share of what is left
  limit=$(($(left) * $1 / SHARES_LEFT))
  SHARES_LEFT=$((SHARES_LEFT - $1))
}

# section TITLE LIMIT COMMAND...: runs with LIMIT seconds; what it prints goes into the report;
# a section cut off or skipped says so.
section() {
  local title=$1 limit=$2; shift 2
  echo "== $title ($limit s)" >&2
  { echo; echo "## $title"; echo; echo "\`$*\`"; echo; echo '```'; } >>"$REPORT"
  if [ "$limit" -lt 10 ]; then
    { echo "not run: the budget was spent ($(left) s left)"; echo '```'; } >>"$REPORT"
    return
  fi
  local started=$SECONDS status
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v -e "Warning" -e "Loading weights" -e "USDT" -e "Writing model" \
    -e "^\[transformers\]" | tail -n 60 >>"$REPORT"
  status=${PIPESTATUS[0]}
  echo '```' >>"$REPORT"
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "**not finished: cut off at its $limit s share of the budget** (what it printed is above)" >>"$REPORT"
  else
    echo "exit status $status after $((SECONDS - started)) s" >>"$REPORT"
  fi
}

# Sized from measurement: build the checkpoint once and time a model load (every section pays one).
LOAD_S=$($PY - "$SIZE" "$DEVICE" <<'EOF' 2>/dev/null | tail -n 1
import sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from decode_steps import checkpoint_for
from model_server.config import Settings
from model_server.generation.engine import BarkEngine
path = checkpoint_for(sys.argv[1], Path(".cache/bench"))
started = time.perf_counter()
BarkEngine(Settings(model_dir=path, device=sys.argv[2], warmup=False))
print(max(1, round(time.perf_counter() - started + 3)))
EOF
)
LOAD_S=${LOAD_S:-20}
echo "- one model load here: about $LOAD_S s (sizes the sections)" >>"$REPORT"

per_level() {  # per_level LIMIT RUNS: seconds of load per run, after the model loads, with room to drain
  local seconds=$((($1 - 3 * LOAD_S) * 2 / ($2 * 5)))
  [ "$seconds" -lt 2 ] && seconds=2
  echo "$seconds"
}

TESTS="tests/generation/test_cuda_graphs.py tests/generation/test_decoding.py tests/generation/test_continuous_engine.py"
TESTS="$TESTS tests/generation/test_fine_stage.py tests/generation/test_reference_outputs.py"
take_share 20
# shellcheck disable=SC2086
section "CUDA tests: graph capture and replay, the continuous loop in fp16 replayed vs eager" "$limit" \
  $PY -m pytest -q -p no:cacheprovider $TESTS -k "$TEST_FILTER"
# The loop with SDPA, then with flash-attn's flash_attn_with_kvcache where the package is installed.
loop_profiles() {
  # shellcheck disable=SC2086
  $PY benchmarks/loop_profile.py --device "$DEVICE" --size "$SIZE" --rows $ROWS --iterations 40 --attention sdpa || return
  if [ "$DEVICE" = cuda ] && $PY -c 'import flash_attn' 2>/dev/null; then
    # shellcheck disable=SC2086
    $PY benchmarks/loop_profile.py --device cuda --size "$SIZE" --rows $ROWS --iterations 40 --attention flash_attention_2
  else
    echo "flash-attn: not timed ($([ "$DEVICE" = cuda ] && echo 'the flash-attn package is not installed here' || echo 'CUDA only'))"
  fi
}
export -f loop_profiles
export PY DEVICE SIZE ROWS
take_share 15
section "One iteration of the real loop (semantic and coarse rows) vs the captured block steps; SDPA and flash-attn" \
  "$limit" bash -c loop_profiles
take_share 20
section "One 1-minute request: ours (continuous loop) vs the original pipeline" "$limit" \
  $PY benchmarks/original_vs_ours.py --mode pipeline --size "$SIZE" --device "$DEVICE" --repeats 1 \
    --tokens-per-word "$TOKENS"
take_share 25
# shellcheck disable=SC2086
section "Concurrency: time to first audio, real-time factor, audio-seconds per second (mixed voices)" "$limit" \
  $PY benchmarks/concurrency_table.py --size "$SIZE" --device "$DEVICE" --clients $CLIENTS \
    --duration "$(per_level "$limit" "$(echo $CLIENTS | wc -w)")" --tokens-per-word "$TOKENS"
take_share 20
# Two schedulers per rate, and the static one drains a backlog after the arrivals stop.
# shellcheck disable=SC2086
section "Continuous vs static under Poisson load" "$limit" \
  $PY benchmarks/continuous_load.py --size "$SIZE" --device "$DEVICE" --scenarios poisson --rates $RATES \
    --duration "$(per_level "$limit" $(($(echo $RATES | wc -w) * 4)))" --tokens-per-word "$TOKENS"

echo >>"$REPORT"
echo "total: $((SECONDS - STARTED)) s of a $BUDGET s budget" >>"$REPORT"
echo "report: $REPORT" >&2

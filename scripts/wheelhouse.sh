#!/usr/bin/env bash
# Wheels of everything in requirements.lock except torch (and the CUDA libraries and triton it brings),
# for manylinux x86_64 and CPython 3.10, 3.11 and 3.12: what a GPU node with its own CUDA torch and
# no network needs to run the project (benchmarks/gpu_check.sh --wheelhouse DIR installs from it).
#
#   scripts/wheelhouse.sh DIR [--python "3.10 3.11 3.12"] [--runtime] [--exclude "name name ..."]
#
#   --python   the Python versions to fetch wheels for (pure-Python wheels are shared by all).
#   --runtime  only what the server, the benchmarks and the CUDA tests need: the project's own
#              dependencies and pytest, pytest-timeout, hypothesis, with everything they require (read
#              from .venv's metadata), not the development tools (mypy, ruff, validators, browsers).
#   --exclude  leave these out (packages the target machine already has at a version that fits).
#
# Needs pip and the index (PyPI or a mirror); run it where both are, then carry DIR to the GPU node.
# Prints what each Python's wheels weigh and which pinned packages have no wheel for it.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { sed -n '2,15p' "$0"; exit 2; }
DIR=$1; shift
PYTHONS="3.10 3.11 3.12" RUNTIME=0 EXCLUDE=""
while [ $# -gt 0 ]; do
  case $1 in
    --python) PYTHONS=$2; shift 2 ;;
    --runtime) RUNTIME=1; shift ;;
    --exclude) EXCLUDE=$2; shift 2 ;;
    *) echo "wheelhouse.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
PIP=${PIP:-$( [ -x .venv/bin/pip ] && echo .venv/bin/pip || echo "python3 -m pip")}
mkdir -p "$DIR"
LIST=$(mktemp)
trap 'rm -f "$LIST"' EXIT

# The pins: the lock less torch, its CUDA libraries and triton (the node has its own), less --exclude;
# with --runtime, only the closure of what the project and the test runner require (read from the
# installed packages' metadata in .venv, so it follows the lock).
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
$PY - "$RUNTIME" "$EXCLUDE" >"$LIST" <<'EOF'
import re, sys
from importlib import metadata
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

runtime, exclude = sys.argv[1] == "1", {canonicalize_name(n) for n in sys.argv[2].split()}
needed = set()
stack = [(root, frozenset()) for root in ("bark-kserve", "pytest", "pytest-timeout", "hypothesis")]
while stack:
    name, extras = stack.pop()
    key = canonicalize_name(name)
    if (key, extras) in needed:
        continue
    needed.add((key, extras))
    try:
        requirements = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        continue
    for text in requirements:
        requirement = Requirement(text)
        wanted = [""] + sorted(extras)
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in wanted):
            continue
        stack.append((requirement.name, frozenset(requirement.extras)))
names = {name for name, _ in needed}
for line in open("requirements.lock"):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    name = canonicalize_name(re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0])
    if name in ("torch", "triton") or name.startswith("nvidia-") or name in exclude:
        continue
    if runtime and name not in names:
        continue
    print(line)
EOF

cp "$LIST" "$DIR/requirements.txt"  # what gpu_check.sh asks pip for (the project itself runs from the clone)

platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
for version in $PYTHONS; do
  target="$DIR/py$version"
  mkdir -p "$target"
  fetch() { $PIP download -q --no-deps --only-binary=:all: --implementation cp --python-version "$version" \
    "${platforms[@]}" -d "$target" "$@" 2>/dev/null; }
  if ! fetch -r "$LIST"; then
    # One by one, to name the pins that have no wheel for this Python.
    missing=()
    while read -r pin; do fetch "$pin" || missing+=("$pin"); done <"$LIST"
    echo "Python $version: no wheel for ${missing[*]}" >&2
  fi
  echo "Python $version: $(find "$target" -name '*.whl' | wc -l) wheels, $(du -sh "$target" | cut -f1)"
done
echo "total: $(find "$DIR" -name '*.whl' | wc -l) wheels, $(du -sh "$DIR" | cut -f1) (one folder per Python: DIR/pyX.Y)"

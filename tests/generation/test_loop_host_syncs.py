"""The real continuous loop makes no host wait in steady state and reads its outputs once, late (#21).

On this CPU the profiler cannot see a host wait, so `benchmarks/step_profile.py --loop` counts them
by wrapping every way of reading a tensor on the host or building one from Python data, on the
loop's thread, over iterations of 8 real rows (both stages active) in which no row joins or leaves.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.serving import REPO_ROOT


def test_steady_iterations_make_no_host_sync_one_late_read_and_few_eager_ops() -> None:
    command = [sys.executable, "benchmarks/step_profile.py", "--loop", "--rows", "8", "--iterations", "40", "--json"]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=True)
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    assert figures["semantic_rows"] == 4 and figures["coarse_rows"] == 4, "both stages were active"
    assert figures["steady_iterations"] >= 30
    assert figures["host_syncs_per_iteration"] == 0, figures["host_syncs_by_name"]
    assert figures["late_reads_per_iteration"] == 1
    assert figures["eager_ops_per_iteration"] <= 10

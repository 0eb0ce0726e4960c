"""The GPU check runs here too (`--device cpu --quick`): every section, within its budget, filled in.

A GPU machine is lent rarely and briefly; a check that breaks on it wastes the loan. So CI runs the
same script, section for section, on tiny shapes: the CUDA tests' CPU counterparts, the loop profile,
the 1-minute request, the concurrency table and the Poisson load, each sized from the budget.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.serving import REPO_ROOT

SECTIONS = (
    "CUDA tests",
    "One iteration of the real loop",
    "One 1-minute request",
    "Concurrency",
    "Continuous vs static under Poisson load",
)


@pytest.mark.slow
def test_the_quick_cpu_run_fills_every_section_within_its_budget(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    command = [
        "bash",
        "benchmarks/gpu_check.sh",
        "--device",
        "cpu",
        "--quick",
        "--budget",
        "240",
        "--report",
        str(report),
    ]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = report.read_text()
    assert "not finished" not in text and "not run" not in text, text
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    assert [next((name for name in SECTIONS if part.startswith(name)), part[:40]) for part in sections] == list(
        SECTIONS
    )
    for part in sections:
        assert re.search(r"exit status 0 after \d+ s", part), part
    loop, request, concurrency, poisson = sections[1:]
    assert re.search(r"^\| 8 \| 4 \+ 4 \| 0 \| 1 \|", loop, re.MULTILINE), (
        "8 rows, both stages, no host sync, 1 late read"
    )
    assert "attention sdpa" in loop and "flash-attn: not timed (CUDA only)" in loop
    assert "ours (continuous)" in request and "ratio ours (continuous)/original" in request
    assert all(re.search(rf"^\| {clients} \| \d+ \|", concurrency, re.MULTILINE) for clients in (1, 2, 4))
    assert re.search(r"^\| static \|", poisson, re.MULTILINE) and re.search(r"^\| continuous \|", poisson, re.MULTILINE)
    assert re.search(r"^total: \d+ s of a 240 s budget$", text, re.MULTILINE)

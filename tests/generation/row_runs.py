"""Driving a row engine by hand in tests: admit, iterate until every row has its outcome."""

from __future__ import annotations

import time
from typing import Any


def run_rows(
    rows: Any, jobs: list, joining: dict[int, list] | None = None, *, errors_allowed: bool = False
) -> dict[int, Any]:
    """Admit `jobs`, iterate until every row has its outcome; `joining[n]` join before iteration n.

    Outcomes by `id(job)`; a row's own error fails the test unless `errors_allowed`. Rows in the fine
    stage finish on the finisher's thread, so with no row left to step this waits for them.
    """
    outcomes: dict[int, Any] = {}
    assert not rows.admit(jobs)
    pending = dict(joining or {})
    iteration = 0
    while rows.active or rows.pending or pending:
        if iteration in pending:
            assert not rows.admit(pending.pop(iteration))
        if rows.active:
            finished = rows.step()
        else:
            time.sleep(0.001)
            finished = rows.collect()
        for done, outcome in finished:
            assert errors_allowed or not isinstance(outcome, BaseException), outcome
            outcomes[id(done)] = outcome
        iteration += 1
    return outcomes

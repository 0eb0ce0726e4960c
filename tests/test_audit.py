"""`make audit` (scripts/audit.py) decides from pip-audit's own report: fail, pass, or SKIPPED, not passed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def audit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_script", REPO / "scripts" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_with(monkeypatch: pytest.MonkeyPatch, report: list[dict[str, Any]] | None, log: str = "") -> int:
    """Run the script with a pip-audit that writes `report` (None: no report) and prints `log`."""
    module = audit_module()

    def fake_run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        if report is not None:
            Path(command[command.index("--output") + 1]).write_text(json.dumps({"dependencies": report}))
        return subprocess.CompletedProcess(command, 1, "", log)

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    return int(module.main("requirements.lock"))


def test_vulnerabilities_or_unaudited_packages_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = {"name": "ok", "version": "1", "vulns": []}
    assert run_with(monkeypatch, [clean, {"name": "bad", "version": "1", "vulns": [{"id": "GHSA-x"}]}]) == 1
    assert run_with(monkeypatch, [clean, {"name": "gone", "skip_reason": "not found"}]) == 1
    assert run_with(monkeypatch, [clean]) == 0


def test_an_unreachable_or_empty_service_is_skipped_not_passed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tip = "Tip: your network may be blocking this service. Try another service with `-s SERVICE`"
    assert run_with(monkeypatch, None, log=tip) == 0
    assert "SKIPPED, not passed" in capsys.readouterr().out
    everything_unknown = [{"name": f"p{i}", "skip_reason": "Dependency not found on PyPI"} for i in range(3)]
    assert run_with(monkeypatch, everything_unknown) == 0
    assert "SKIPPED, not passed" in capsys.readouterr().out
    assert run_with(monkeypatch, None, log="Traceback: something else broke") == 1

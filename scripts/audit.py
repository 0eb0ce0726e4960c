"""`make audit`: known vulnerabilities in requirements.lock, with pip-audit deciding what it could check.

pip-audit is run once against its PyPI advisory service. Its own report says what happened, and that
decides the outcome; no host is probed or named here:
- vulnerabilities found, or some locked packages left unaudited: fail (as `--strict` would);
- every package audited, none vulnerable: pass;
- pip-audit could not reach its service, or the service knew none of the locked packages (a mirror
  that serves only the package index answers "not found" for all): "SKIPPED, not passed", exit 0, so
  an offline runner neither fails nor claims a clean result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

UNREACHABLE = ("network may be blocking this service", "ConnectionError", "Max retries exceeded", "Failed to resolve")


def main(lock: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "audit.json"
        command = [
            str(Path(sys.executable).with_name("pip-audit")),
            *("--no-deps", "--disable-pip", "--vulnerability-service", "pypi", "--progress-spinner", "off"),
            *("--format", "json", "--output", str(report), "-r", lock),
        ]
        run = subprocess.run(command, capture_output=True, text=True)
        log = run.stdout + run.stderr
        if not report.exists() or not report.read_text().strip():
            if any(sign in log for sign in UNREACHABLE):
                return skipped(f"pip-audit could not reach its vulnerability service:\n{tail(log)}")
            print(log, file=sys.stderr)
            return run.returncode or 1
        dependencies = json.loads(report.read_text())["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    unaudited = [d for d in dependencies if "skip_reason" in d]
    for dependency in vulnerable:
        ids = ", ".join(vuln["id"] for vuln in dependency["vulns"])
        print(f"{dependency['name']} {dependency.get('version', '')}: {ids}")
    if dependencies and len(unaudited) == len(dependencies):
        return skipped(
            f"pip-audit's service knew none of the {len(dependencies)} locked packages "
            f"(first: {unaudited[0]['skip_reason']})"
        )
    for dependency in unaudited:
        print(f"{dependency['name']}: not audited: {dependency['skip_reason']}")
    if vulnerable or unaudited:
        print(f"make audit: FAILED: {len(vulnerable)} vulnerable, {len(unaudited)} not audited", file=sys.stderr)
        return 1
    print(f"make audit: {len(dependencies)} locked packages audited, no known vulnerabilities")
    return 0


def skipped(reason: str) -> int:
    print(f"make audit: SKIPPED, not passed: {reason}\nRun 'make audit' where pip-audit reaches PyPI's advisory data.")
    return 0


def tail(text: str, lines: int = 3) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))

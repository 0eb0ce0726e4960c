"""The project is self-contained: a user's clone has nothing beside it, so nothing in it may read or
name a file outside the repository (the KServe CRD is vendored under third_party/)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Code that reaches into the clone's parent directory. No machine's own folder layout is spelled
# here: the project names none at all.
OUTSIDE = re.compile(r"\.\./shared\b|REPO\.parent|parents\[\d+\]\s*/\s*\"shared\"")
#: A relative path that climbs: it must still land inside the clone (a chart README linking ../../docs).
CLIMBING = re.compile(r"(?:\.\./)+[\w.-]*")
THIS_FILE = Path(__file__).resolve().relative_to(REPO).as_posix()


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    return [REPO / n for n in names if n and n != THIS_FILE and not n.startswith("third_party/")]


def test_no_file_names_a_path_outside_the_repository() -> None:
    offenders = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            climbs_out = any(
                not (path.parent / match).resolve().is_relative_to(REPO) for match in CLIMBING.findall(line)
            )
            if OUTSIDE.search(line) or climbs_out:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "files that point outside the repository:\n" + "\n".join(offenders)


def test_the_kserve_crd_is_vendored_with_its_license_and_origin() -> None:
    vendored = REPO / "third_party" / "kserve"
    assert (vendored / "serving.kserve.io_inferenceservices.yaml").is_file()
    assert "Apache License" in (vendored / "LICENSE").read_text()
    readme = (vendored / "README.md").read_text()
    assert "github.com/kserve/kserve" in readme and "kserve==" in readme

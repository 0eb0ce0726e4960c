"""The image cannot be built here (no Docker engine): lint the Dockerfile and check its essentials."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

from deploy_helpers import REPO, require_executable

DOCKERFILE = REPO / "Dockerfile"
TEXT = DOCKERFILE.read_text()
# Instructions with continuation lines joined and comments dropped.
INSTRUCTIONS = [
    line for line in re.sub(r"\\\n\s*", " ", TEXT).splitlines() if line.strip() and not line.lstrip().startswith("#")
]


def instructions(keyword: str) -> list[str]:
    return [i.split(None, 1)[1] for i in INSTRUCTIONS if i.split(None, 1)[0].upper() == keyword]


def test_hadolint_passes() -> None:
    result = subprocess.run([require_executable("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\n")
    result = subprocess.run([require_executable("hadolint"), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag


def test_base_is_a_pinned_cuda_runtime_image() -> None:
    (base,) = [a for a in instructions("ARG") if a.startswith("CUDA_IMAGE=")]
    assert re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert instructions("FROM") == ["${CUDA_IMAGE}"]


def test_torch_is_a_cuda_build_installed_before_the_project() -> None:
    runs = instructions("RUN")
    torch_step = next(i for i, r in enumerate(runs) if "pip install --index-url" in r)
    project_step = next(i for i, r in enumerate(runs) if "pip install ." in r)
    assert torch_step < project_step
    (index,) = [a for a in instructions("ARG") if a.startswith("TORCH_INDEX_URL=")]
    assert re.fullmatch(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", index)


def test_flash_attn_is_opt_in_and_cannot_break_the_build() -> None:
    assert "WITH_FLASH_ATTN=0" in instructions("ARG")
    (step,) = [r for r in instructions("RUN") if "flash-attn" in r]
    assert '"$WITH_FLASH_ATTN" = "1"' in step
    assert re.search(r"\|\|\s*echo", step)


def test_nltk_punkt_is_baked_in() -> None:
    (step,) = [r for r in instructions("RUN") if "nltk.downloader" in r]
    assert "punkt_tab" in step.split() and "punkt" in step.split()
    assert "NLTK_DATA=/usr/local/share/nltk_data" in instructions("ENV")[0]


def test_runs_as_numeric_non_root_user_with_writable_hf_home() -> None:
    assert instructions("USER")[-1] == "1000:1000"
    assert "HF_HOME=/home/bark/.cache/huggingface" in instructions("ENV")[0]
    assert instructions("VOLUME") == ['["/home/bark/.cache/huggingface"]']
    (user_step,) = [r for r in instructions("RUN") if "useradd" in r]
    assert "--uid 1000" in user_step and "chown -R 1000:1000 /home/bark" in user_step


def test_ports_and_entrypoint() -> None:
    assert instructions("EXPOSE") == ["8080 9081"]
    assert instructions("ENTRYPOINT") == ['["python", "-m", "model_server"]']


def test_copies_exactly_the_project_and_dockerignore_lets_it_through() -> None:
    sources = [s for c in instructions("COPY") for s in c.split()[:-1]]
    assert sorted(sources) == ["README.md", "bark_common/", "model_server/", "pyproject.toml", "webhook_sidecar/"]
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]

    def ignored(path: str) -> bool:  # last matching pattern wins, as in Docker
        verdict = False
        for p in patterns:
            negate, pat = p.startswith("!"), p.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path.rstrip("/"), pat):
                verdict = not negate
        return verdict

    assert not [s for s in sources if ignored(s)]
    assert ignored(".venv") and ignored("tests") and ignored(".git")


def test_the_cuda_allocator_uses_expandable_segments() -> None:
    """Rows of every length come and go: without expandable segments the allocator fragments."""
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in instructions("ENV")[0]

# syntax=docker/dockerfile:1
# bark-kserve: the model server (python -m model_server) and the webhook sidecar
# (python -m webhook_sidecar) in one CUDA image. Build (see docs/DEPLOY.md):
#   docker build -t ghcr.io/bark-kserve/bark-kserve:0.1.0 .
#   docker build --build-arg WITH_FLASH_ATTN=1 -t ...      # + flash-attn (opt-in; SDPA is the default)
#
# CUDA 12.8 runtime + cuDNN on Ubuntu 24.04, whose python3.12 the project runs on. torch comes
# from PyTorch's cu128 index (its wheels carry sm_86 kernels for the A10G); the driver on the node
# must support CUDA 12.8 (R570+), or use a cu126 index with an older driver.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.9.1
# 1: try flash-attn 2 (a prebuilt wheel must match torch/CUDA/Python; there is no nvcc here to
# build one); when none fits the build goes on and the server uses SDPA. Off by default: `auto`
# attention is SDPA; flash-attn serves `--attention flash_attention_2` (the continuous step's
# flash_attn_with_kvcache and the fine stage). benchmarks/gpu_check.sh times it against SDPA.
ARG WITH_FLASH_ATTN=0

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NLTK_DATA=/usr/local/share/nltk_data \
    HF_HOME=/home/bark/.cache/huggingface \
    BARK_VOICE_STORE=/var/lib/bark-voices \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv "$VIRTUAL_ENV"

# torch first, from the CUDA index, so the project's `torch>=2.6` is already satisfied by it.
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"

WORKDIR /opt/bark-kserve
COPY pyproject.toml README.md ./
COPY model_server/ model_server/
COPY webhook_sidecar/ webhook_sidecar/
COPY bark_common/ bark_common/
RUN pip install . \
 && if [ "$WITH_FLASH_ATTN" = "1" ]; then \
      pip install packaging==25.0 ninja==1.13.0 psutil==7.1.3 \
      && (pip install --no-build-isolation "flash-attn>=2.6" \
          || echo "flash-attn: no wheel for this torch/CUDA/Python; the server falls back to SDPA"); \
    fi

# Sentence splitting data, baked in: pods never download it.
RUN python -m nltk.downloader -d "$NLTK_DATA" punkt_tab punkt

# PYTORCH_CUDA_ALLOC_CONF (above): rows of every length come and go, and the fine stage's groups vary
# in size; expandable segments let the allocator grow blocks in place instead of fragmenting memory
# into pieces that fit no later request (an out-of-memory with gigabytes "reserved but unallocated").

# uid 1000 (numeric USER so runAsNonRoot can verify it); Ubuntu 24.04 ships user "ubuntu" as 1000.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin bark \
 && mkdir -p "$HF_HOME" /var/lib/bark-jobs "$BARK_VOICE_STORE" \
 && chown -R 1000:1000 /home/bark /var/lib/bark-jobs "$BARK_VOICE_STORE"
USER 1000:1000
# Model downloads (download mode) land here; mount a volume (the chart does).
VOLUME ["/home/bark/.cache/huggingface"]

# 8080: model server (KServe HTTP + /metrics); 9081: webhook sidecar job API.
EXPOSE 8080 9081
ENTRYPOINT ["python", "-m", "model_server"]

"""All server settings in one typed place, read once at start.

Every field can be set by an environment variable with the `BARK_` prefix (e.g. `BARK_DTYPE=float16`),
which is how the Helm chart configures pods; the CLI overrides the few that people pass by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Attention = Literal["auto", "flash_attention_2", "sdpa", "eager"]
Decoder = Literal["auto", "transformers", "static", "cudagraph"]

#: Where `--demo` (or no model at all) builds the tiny random-weight checkpoint.
DEFAULT_DEMO_DIR = Path(".cache/bark-tiny")


class Settings(BaseSettings):
    """Server settings. Defaults suit a GPU pod; the CPU demo overrides nothing."""

    model_config = SettingsConfigDict(env_prefix="BARK_", extra="ignore")

    model_name: str = "bark"
    model_id: str | None = Field(None, description="hub id, e.g. suno/bark-small")
    model_dir: Path | None = Field(None, description="local checkpoint, e.g. /mnt/models")
    demo: bool = Field(False, description="serve a tiny random-weight checkpoint built locally")
    demo_dir: Path = DEFAULT_DEMO_DIR

    device: Device = "auto"
    dtype: Dtype = "auto"
    attention: Attention = "auto"
    decoder: Decoder = "auto"

    # Batching: chunks of all requests share decoding steps (see scheduler.py).
    max_batch_size: int = Field(32, ge=1, le=512)
    max_wait_ms: int = Field(20, ge=0, le=10_000)
    max_queue_chunks: int = Field(512, ge=1)
    # continuous: rows of any voice/settings/seed join and leave the running batch at every step
    # (continuous/); static: per-(voice, settings) batches run to their end (kept for comparisons).
    scheduler: Literal["continuous", "static"] = "continuous"
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with a 503 when the queue is full")

    # Text handling and request bounds.
    # How a text becomes chunks (rows): `packed` packs whole sentences up to batch_chunk_size words;
    # `sentence` makes every sentence a chunk of its own (still bounded in words and ~13 s); `auto`
    # is `sentence` on CUDA, where a step of 64 rows costs about what one row's does, so a text's
    # sentences all run side by side and a request takes as long as its longest sentence, and
    # `packed` on a CPU, where every row costs its share of a step (see README, "Chunking").
    chunking: Literal["auto", "sentence", "packed"] = "auto"
    default_chunk_words: int = Field(20, ge=1)
    min_chunk_words: int = Field(3, ge=1)
    max_chunk_words: int = Field(60, ge=1)
    max_prompt_chars: int = Field(20_000, ge=1)
    max_instances: int = Field(16, ge=1)
    max_turns: int = Field(256, ge=1, description="turns in one instance's dialogue (400 past it)")
    pause_ms: int = Field(150, ge=0, le=5_000, description="silence inserted between chunks")
    # Bark may babble past the end of a sentence; random weights always do. A budget of semantic
    # tokens per word (49.9 tokens = 1 s of speech) bounds each chunk on its own.
    semantic_tokens_per_word: float = Field(25.0, gt=0)
    semantic_tokens_min: int = Field(50, ge=1)

    # OpenAI's voice names mapped to Bark presets (the /v1/audio/speech route and v1 predict accept both).
    voice_aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "alloy": "v2/en_speaker_0",
            "ash": "v2/en_speaker_1",
            "ballad": "v2/en_speaker_2",
            "coral": "v2/en_speaker_3",
            "echo": "v2/en_speaker_4",
            "fable": "v2/en_speaker_5",
            "onyx": "v2/en_speaker_6",
            "nova": "v2/en_speaker_7",
            "sage": "v2/en_speaker_8",
            "shimmer": "v2/en_speaker_9",
            "verse": "v2/en_speaker_1",
        }
    )

    # Auth: with no key configured, auth is off (the Helm chart configures keys by default).
    api_keys: str | None = Field(None, description="comma-separated API keys", repr=False)
    api_keys_file: Path | None = Field(None, description="file with one API key per line")
    metrics_require_auth: bool = False
    # Admin keys are API keys too; they may also publish custom voices to every key (docs/VOICES.md).
    admin_api_keys: str | None = Field(None, description="comma- or newline-separated admin API keys", repr=False)
    admin_api_keys_file: Path | None = Field(None, description="file with one admin API key per line")

    # Custom voices (docs/VOICES.md): uploaded or kept speaker prompts, owned by the key that made them.
    voice_store: str = Field(
        ".cache/bark-voices",
        description="where custom voices live: a directory (one replica), or a postgresql:// URL shared by replicas",
        repr=False,  # a URL may hold a password
    )
    voice_max_bytes: int = Field(512 * 1024, ge=1024, description="largest speaker prompt (.npz) upload, in bytes")
    max_voices_per_key: int = Field(100, ge=0, description="custom voices one API key may keep (0: no limit)")
    voice_cache_size: int = Field(64, ge=1, description="custom voices kept in memory and on the device per replica")
    voice_store_poll_s: float = Field(
        0.25, gt=0, le=10, description="how often a replica checks the store's version (PostgreSQL also notifies)"
    )
    request_timeout_s: float = Field(1800.0, gt=0, description="a request running longer gets a 504")

    warmup: bool = True
    log_format: Literal["text", "json"] = "text"
    log_prompts: bool = False
    playground: bool = Field(False, description="serve the browser playground at /playground (make run turns it on)")

    # -- hardening (issue #9): bounds on one request's size and work, and the drain on SIGTERM --
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="request bodies larger than this get a 413 (http.body_limit.BodySizeLimit)"
    )
    max_words_per_request: int = Field(10_000, ge=1, description="words over all instances of one request (400)")
    max_output_seconds: float = Field(
        3600.0, gt=0, description="estimated audio of one request, from its semantic token budgets (400)"
    )
    shutdown_grace_s: int = Field(30, ge=0, description="on SIGTERM, in-flight requests get this long to finish")

    @model_validator(mode="after")
    def _chunk_bounds_are_ordered(self) -> Settings:
        if not self.min_chunk_words <= self.default_chunk_words <= self.max_chunk_words:
            raise ValueError("need min_chunk_words <= default_chunk_words <= max_chunk_words")
        return self

    @property
    def model_source(self) -> str:
        """What `from_pretrained` loads: a local folder wins over a hub id; the demo over both."""
        if self.demo:
            return str(self.demo_dir)
        if self.model_dir is not None:
            return str(self.model_dir)
        if self.model_id:
            return self.model_id
        raise ValueError("no model given: pass --model_id, --model_dir or --demo")

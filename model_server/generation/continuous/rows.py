"""A row: one chunk's state as it moves through the semantic and coarse stages, one token per step.

Everything a row needs to be generated exactly as it would be alone lives here: its voice history,
settings and seed, its position in its stage's cache, its draw counter (the noise stream), and in
the coarse stage its own sliding-window plan. The window arithmetic mirrors
`BarkCoarseModel.generate` line by line (float ratios, Python's round) for a batch of one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkFineGenerationConfig,
    BarkSemanticGenerationConfig,
)

from model_server import metrics
from model_server.generation.continuous.fine import FineRow, generate_fine
from model_server.generation.continuous.slots import to_device, upload
from model_server.generation.engine import Sampling, tokenize_chunks
from model_server.generation.speaker_prompt import KeptChunk, SpeakerPrompt

#: Mixed into a row's seed for the fine stage's own random stream.
_FINE_STREAM = 0x5EED


@dataclass
class Configs:
    """The three generation configs the static engine would build for this row's settings."""

    semantic: BarkSemanticGenerationConfig
    coarse: BarkCoarseGenerationConfig
    fine: BarkFineGenerationConfig


@dataclass
class CoarsePlan:
    """One row's coarse sliding windows (see `BarkCoarseModel.generate`)."""

    semantic: torch.Tensor  # (history + own semantic tokens,) in coarse-prompt ids
    base_index: int  # where the row's own semantic tokens start in `semantic`
    ratio: float
    max_semantic_history: int
    output_length: int  # coarse tokens this row produces (a multiple of the codebook count)
    tokens: list[int]  # voice coarse history, then everything generated so far
    history_length: int
    window_new: int = 0  # tokens the current window generates
    window_step: int = 0  # tokens generated in the current window (its parity picks the codebook)

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.history_length

    def next_window_prompt(self, config: BarkCoarseGenerationConfig, device: torch.device) -> torch.Tensor:
        """The next window's prompt (1-D long); also sets `window_new` and resets `window_step`."""
        total = self.generated
        index = self.base_index + round(total / self.ratio)  # as generate: int(round(float))
        window = self.semantic[max(0, index - self.max_semantic_history) :][: config.max_coarse_input_length]
        window = F.pad(
            window, (0, config.max_coarse_input_length - window.shape[0]), value=config.coarse_semantic_pad_token
        )
        infer = torch.full((1,), config.coarse_infer_token, dtype=torch.long, device=device)
        history = upload(self.tokens[-config.max_coarse_history :], torch.long, device)
        self.window_new = min(config.sliding_window_len, self.output_length - total)
        self.window_step = 0
        return torch.cat([window, infer, history])


@dataclass
class Row:
    """One chunk in flight. `job` is the scheduler's handle; the rest is generation state."""

    job: Any
    text: str
    voice: str | None
    sampling: Sampling
    budget: int
    seed: int  # 32 bits: the row's noise stream (drawn at first admission when the request has none)
    configs: Configs
    history: dict[str, torch.Tensor] | None
    #: The same voice prompt on the host: the coarse plan is made from it without reading the device.
    history_host: dict[str, torch.Tensor] | None
    stage: str = "semantic"
    #: The host's mirror of the row's device position (where its next token is written): advanced
    #: at each launch, so the loop picks key-range buckets without reading the device. It may run one
    #: ahead for a row that has just stopped (waiting for the host), which only widens a bucket.
    position: int = 0
    fresh: bool = False  # prefilled: the next step samples from the prefill's logits
    draws: int = 0  # draws made, counted from the outputs the host read
    gone: bool = False  # dropped or evicted: outputs still in flight for it are ignored
    semantic: list[int] = field(default_factory=list)
    coarse: CoarsePlan | None = None
    stage_started: float = field(default_factory=time.perf_counter)

    @property
    def temperature(self) -> float:
        return self.sampling.semantic_temperature if self.stage == "semantic" else self.sampling.coarse_temperature


def coarse_plan(row: Row, coarse_model: Any, codebook_size: int, device: torch.device) -> CoarsePlan:
    """The coarse windows of `row` after its semantic stage, as `generate` would plan them alone."""
    semantic_config, coarse_config = row.configs.semantic, row.configs.coarse
    ratio = coarse_config.coarse_rate_hz / semantic_config.semantic_rate_hz * coarse_config.n_coarse_codebooks
    max_semantic_history = int(np.floor(coarse_config.max_coarse_history / ratio))
    codebooks = coarse_config.n_coarse_codebooks
    # In torch, as `generate` computes it (a float32 product: float64 could round differently).
    frames = torch.floor(torch.tensor([len(row.semantic)]) * ratio / codebooks)
    output_length = int(torch.round(frames * codebooks).int().item())
    history = row.history_host
    # On host tensors: shape arithmetic only, and the coarse history must become a list anyway.
    semantic_history, coarse_history = torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long)
    if history is not None:  # without a voice transformers would make its empty histories on the device
        semantic_history, coarse_history = coarse_model.preprocess_histories(
            history_prompt=history,
            max_coarse_history=coarse_config.max_coarse_history,
            semantic_to_coarse_ratio=ratio,
            batch_size=1,
            semantic_generation_config=semantic_config,
            codebook_size=codebook_size,
        )
    semantic_host = torch.cat([semantic_history.cpu().long().reshape(-1), torch.tensor(row.semantic, dtype=torch.long)])
    semantic = to_device(semantic_host, device)
    coarse_tokens = [int(token) for token in coarse_history.cpu().reshape(-1).tolist()]
    return CoarsePlan(
        semantic=semantic,
        base_index=int(semantic_history.shape[1]),
        ratio=ratio,
        max_semantic_history=max_semantic_history,
        output_length=output_length,
        tokens=coarse_tokens,
        history_length=len(coarse_tokens),
    )


def semantic_prompts(rows: list[Row], tokenizer: Any, table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Bark's semantic prompts, embedded (rows, 257, hidden): text and voice history share the first
    256 positions (summed), then the infer token."""
    config = rows[0].configs.semantic
    length = int(config.max_input_semantic_length)
    # Tokenised on the host, then queued to the device (pinned, non_blocking): no wait for the running steps.
    encoded = tokenize_chunks(tokenizer, [row.text for row in rows], length, torch.device("cpu"))
    ids = encoded["input_ids"].long() + config.text_encoding_offset
    ids = ids.masked_fill(~encoded["attention_mask"].bool(), config.text_pad_token)[:, :length]
    ids = F.pad(ids, (0, length - ids.shape[1]), value=config.text_pad_token)
    ids = to_device(ids, device)
    histories = torch.stack([_semantic_history(row, length, device) for row in rows])
    infer = torch.full((len(rows), 1), config.semantic_infer_token, dtype=torch.long, device=device)
    return torch.cat([F.embedding(ids, table) + F.embedding(histories, table), F.embedding(infer, table)], dim=1)


def _semantic_history(row: Row, length: int, device: torch.device) -> torch.Tensor:
    pad = row.configs.semantic.semantic_pad_token
    if row.history is None:
        return torch.full((length,), pad, dtype=torch.long, device=device)
    history = row.history["semantic_prompt"].to(device).long()[-length:]
    return F.pad(history, (0, length - history.shape[0]), value=pad)


def fine_input(row: Row, semantic_vocab: int, codebook_size: int, device: torch.device) -> FineRow:
    """The fine stage's input for a row whose coarse tokens are done: its coarse codes, its voice's
    fine prompt and its own fine sampling (a stream of the row's seed)."""
    plan = row.coarse
    assert plan is not None
    codebooks = row.configs.coarse.n_coarse_codebooks
    coarse = torch.tensor(plan.tokens[plan.history_length :], dtype=torch.long, device=device)
    codes = torch.remainder(coarse.view(-1, codebooks) - semantic_vocab, codebook_size)
    history = row.history["fine_prompt"].to(device).long().T if row.history is not None else None
    return FineRow(codes, history, row.configs.fine.temperature, row.seed ^ _FINE_STREAM)


def generated_prompt(row: Row, fine: torch.Tensor, semantic_vocab: int, codebook_size: int) -> SpeakerPrompt:
    """A finished row's own tokens as a speaker prompt, in the layout of Bark's presets: its semantic
    tokens, its coarse tokens back from the coarse stage's ids to codes (as `fine_input` reads them),
    and its fine codes (n_fine, frames)."""
    plan = row.coarse
    assert plan is not None
    codebooks = row.configs.coarse.n_coarse_codebooks
    coarse = np.asarray(plan.tokens[plan.history_length :], dtype=np.int64).reshape(-1, codebooks)
    return SpeakerPrompt.of(row.semantic, np.remainder(coarse - semantic_vocab, codebook_size).T, fine.cpu())


def fine_codes(
    model: Any, rows: list[Row], config: Any, semantic_vocab: int, codebook_size: int, device: torch.device
) -> list[torch.Tensor]:
    """The fine stage for rows whose coarse tokens are done, in one pass. On CUDA it waits for the
    calling thread's stream only (the finisher's own), never the device: the loop goes on meanwhile."""
    inputs = [fine_input(row, semantic_vocab, codebook_size, device) for row in rows]
    codes = generate_fine(model.fine_acoustics, inputs, config, codebook_size)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return codes


def decode_row(
    model: Any, row: Row, fine: torch.Tensor, semantic_vocab: int, codebook_size: int, device: torch.device
) -> np.ndarray | KeptChunk:
    """The codec for one row's fine codes (n_fine, frames): its waveform, trimmed to its frames
    (with the row's tokens when its payload asks to keep them)."""
    plan = row.coarse
    assert plan is not None
    frames = torch.tensor([plan.output_length // row.configs.coarse.n_coarse_codebooks], device=device)
    started = time.perf_counter()
    audio = model.codec_decode(fine[None], frames)
    waveform = audio[0].float().reshape(-1).cpu().numpy()
    metrics.STAGE_LATENCY.labels(stage="codec_decode").observe(time.perf_counter() - started)
    if getattr(row.job.payload, "keep_tokens", False):
        return KeptChunk(waveform, generated_prompt(row, fine, semantic_vocab, codebook_size))
    return waveform

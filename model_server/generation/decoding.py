"""Static-KV-cache decoding of Bark's two autoregressive stages, replayable as CUDA graphs.

Why this exists: transformers' `generate` runs every decoding step eagerly with a growing cache.
For Bark's small transformers that is almost all kernel-launch overhead: one step of bark-small's
12 blocks takes 5.3 ms eagerly and 0.53 ms replayed as a CUDA graph (H200, fp16, see
`benchmarks/RESULTS.md`), and a minute of speech needs ~3,000 sequential semantic + coarse steps.

What it does: it reads the loaded `BarkCausalModel` weights in place (no new checkpoint format) and
re-implements its forward with a preallocated K/V cache of shape
(layers, batch rows, heads, block_size, head_dim). The one-token step has static shapes and no
data-dependent Python control flow (the position is a device tensor; attention is SDPA over a fixed
key range with a mask of valid positions), so on CUDA it is captured once per (stage, batch bucket,
key-range bucket) and replayed; on CPU the very same function runs eagerly. Batches are padded up
to a power-of-two bucket so that a handful of graphs serve every batch size.

Bark's generation rules are reproduced, not re-invented: the semantic prompt layout (text +
history embeddings summed, then the infer token), the coarse stage's sliding windows over
`preprocess_histories`' output, and the logits processors, which are built by transformers itself
(`_prepare_generation_config` + `_get_logits_processor`) from the same generation config. That is
how defaults such as sampling's implicit `top_k=50` stay identical. Logits processing and sampling
run outside the graph: they are a few small tensor ops per step.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BarkModel, GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    AlternatingCodebooksLogitsProcessor,
    BarkEosPrioritizerLogitsProcessor,
)
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkSemanticGenerationConfig,
)

from model_server import metrics
from model_server.generation.kv_cache import CacheShape, check_kv_cache_fits, device_memory
from model_server.generation.step_runner import DecoderUnavailable, StepRunner, _Stage

logger = logging.getLogger(__name__)

DecoderKind = Literal["transformers", "static", "cudagraph"]
DecoderSetting = Literal["auto", "transformers", "static", "cudagraph"]

#: The auto choice on CPU. `benchmarks/decode_steps.py --size tiny --quick --repeats 3` (fp32, 2-core
#: VM) gave the static path 2.3-4.5x transformers' steps/s for both stages at batch 1/8/32 (2.3-3.5x
#: with `--threads 1`, 2.8-7.0x with `--voice`); at bark-small's shapes (batch 1 and 3) it was on
#: par, 0.95-1.18x, being compute-bound there. Never slower beyond noise: static is the CPU default.
CPU_AUTO_DECODER: DecoderKind = "static"


def _eos_ids(config: GenerationConfig) -> list[int]:
    eos = config.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(token) for token in eos]


class _SuppressTokens(LogitsProcessor):
    """`SuppressTokensLogitsProcessor` with its mask built once instead of by `isin` every step.

    Same result (`where(mask, -inf, scores)`); on CPU the per-step `isin` alone cost ~0.7 ms, more
    than a whole tiny-model step.
    """

    def __init__(self, suppressed: Sequence[int], vocab_size: int, device: torch.device):
        self._mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self._mask[torch.tensor(list(suppressed), dtype=torch.long, device=device)] = True

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return cast(torch.FloatTensor, torch.where(self._mask, -float("inf"), scores))


# -- the decoder: Bark's generation rules over the step runner ------------------------------------
class StaticBarkDecoder(StepRunner):
    """Semantic and coarse generation over a static K/V cache, optionally replayed as CUDA graphs.

    Not thread-safe: like the engine, it is driven by the one worker thread that owns the device.
    """

    # -- public API ----------------------------------------------------------------------------
    @torch.inference_mode()
    def semantic(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        history_prompt: dict[str, torch.Tensor] | None,
        semantic_config: BarkSemanticGenerationConfig,
        budgets: Sequence[int] | None = None,
    ) -> torch.LongTensor:
        """Semantic tokens, as `model.semantic.generate` returns them (finished rows padded).

        `budgets` stops each row after its own number of tokens, like the engine's
        `_PerRowTokenBudget`; `semantic_config.max_new_tokens` bounds the whole batch.
        """
        config = semantic_config
        rows = int(input_ids.shape[0])
        if budgets is not None and len(budgets) != rows:
            raise ValueError("one semantic budget per row is required")
        length = int(config.max_input_semantic_length)
        ids = input_ids.to(self.device).long() + config.text_encoding_offset
        if attention_mask is not None:
            ids = ids.masked_fill(~attention_mask.to(self.device).bool(), config.text_pad_token)
        ids = ids[:, :length]
        ids = F.pad(ids, (0, length - ids.shape[1]), value=config.text_pad_token)
        if history_prompt is not None:
            history = history_prompt["semantic_prompt"].to(self.device).long()[-length:]
            history = F.pad(history, (0, length - history.shape[0]), value=config.semantic_pad_token)
        else:
            history = torch.full((length,), config.semantic_pad_token, dtype=torch.long, device=self.device)
        infer = torch.full((rows, 1), config.semantic_infer_token, dtype=torch.long, device=self.device)
        table = self._semantic.weights.token_embedding
        # Bark's prompt: text and voice history share the first 256 positions (their embeddings are
        # summed), then one infer token.
        embeds = torch.cat(
            [F.embedding(ids, table) + F.embedding(history, table)[None], F.embedding(infer, table)], dim=1
        )
        prompt_length = length + 1
        max_new_tokens = int(config.max_new_tokens or 768)

        vocab = int(self._semantic.model.config.output_vocab_size)
        pad = int(config.semantic_pad_token)
        suppressed = [*range(config.semantic_vocab_size, pad), *range(pad + 1, vocab)]
        bark_rules: list[LogitsProcessor] = [
            _SuppressTokens(suppressed, vocab, self.device),
            BarkEosPrioritizerLogitsProcessor(
                eos_token_id=config.eos_token_id, min_eos_p=config.min_eos_p, device=str(self.device)
            ),
        ]
        prepared, processors = self._processors(self._semantic, config, bark_rules, prompt_length, None)
        # transformers' semantic `generate` is fed a dummy prompt of ones; processors see the same.
        prompt = torch.ones((rows, prompt_length), dtype=torch.long, device=self.device)
        budget_tensor = (
            torch.tensor(list(budgets), dtype=torch.long, device=self.device) if budgets is not None else None
        )
        first_logits = self._prefill(self._semantic, embeds)
        return self._decode(
            self._semantic,
            first_logits,
            prompt,
            max_new_tokens,
            processors,
            prepared,
            pad_token=pad,
            budgets=budget_tensor,
        )

    @torch.inference_mode()
    def coarse(
        self,
        semantic_tokens: torch.Tensor,
        history_prompt: dict[str, torch.Tensor] | None,
        semantic_config: BarkSemanticGenerationConfig,
        coarse_config: BarkCoarseGenerationConfig,
        codebook_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse tokens and per-row lengths, as `coarse_acoustics.generate(..., return_output_lengths=True)`.

        Unlike transformers, the input is not modified in place. Each sliding window is a fresh
        prefill (its prompt slides, so positions move); its decoding steps run on the static cache.
        """
        stage = self._coarse
        sem_pad, coarse_pad = semantic_config.semantic_pad_token, coarse_config.coarse_semantic_pad_token
        semantic = semantic_tokens.to(self.device)
        semantic = semantic.masked_fill(semantic == sem_pad, coarse_pad)
        # The arithmetic below mirrors BarkCoarseModel.generate line by line, so that window bounds
        # (float ratios, Python's round) come out identical.
        ratio = coarse_config.coarse_rate_hz / semantic_config.semantic_rate_hz * coarse_config.n_coarse_codebooks
        max_semantic_history = int(np.floor(coarse_config.max_coarse_history / ratio))
        output_lengths = (semantic != coarse_pad).sum(1)
        output_lengths = torch.floor(output_lengths * ratio / coarse_config.n_coarse_codebooks)
        output_lengths = torch.round(output_lengths * coarse_config.n_coarse_codebooks).int()
        max_generated_len = int(torch.max(output_lengths).item())
        rows = int(semantic.shape[0])
        semantic_history, coarse_tokens = cast(
            tuple[torch.Tensor, torch.Tensor],
            cast(Any, stage.model).preprocess_histories(
                history_prompt=history_prompt,
                max_coarse_history=coarse_config.max_coarse_history,
                semantic_to_coarse_ratio=ratio,
                batch_size=rows,
                semantic_generation_config=semantic_config,
                codebook_size=codebook_size,
            ),
        )
        semantic_history = semantic_history.to(self.device)
        coarse_tokens = coarse_tokens.to(self.device)
        base_semantic_idx = semantic_history.shape[1]
        semantic = torch.hstack([semantic_history, semantic])
        history_length = coarse_tokens.shape[1]
        infer = torch.full((rows, 1), coarse_config.coarse_infer_token, dtype=torch.long, device=self.device)
        total_generated_len = 0
        for _ in range(int(np.ceil(max_generated_len / coarse_config.sliding_window_len))):
            semantic_idx = base_semantic_idx + round(total_generated_len / ratio)
            window = semantic[:, max(0, semantic_idx - max_semantic_history) :]
            window = window[:, : coarse_config.max_coarse_input_length]
            window = F.pad(
                window, (0, coarse_config.max_coarse_input_length - window.shape[-1]), "constant", coarse_pad
            )
            prompt = torch.hstack([window, infer, coarse_tokens[:, -coarse_config.max_coarse_history :]]).long()
            alternating = AlternatingCodebooksLogitsProcessor(
                prompt.shape[1], semantic_config.semantic_vocab_size, codebook_size
            )
            new_tokens = min(coarse_config.sliding_window_len, max_generated_len - total_generated_len)
            prepared, processors = self._processors(stage, coarse_config, [alternating], prompt.shape[1], prompt)
            first_logits = self._prefill(stage, F.embedding(prompt, stage.weights.token_embedding))
            generated = self._decode(
                stage,
                first_logits,
                prompt,
                new_tokens,
                processors,
                prepared,
                pad_token=prepared.pad_token_id,
                budgets=None,
            )
            coarse_tokens = torch.hstack([coarse_tokens, generated])
            total_generated_len = coarse_tokens.shape[1] - history_length
        return coarse_tokens[:, history_length:], output_lengths

    # -- generation loop --------------------------------------------------------------------------
    def _processors(
        self,
        stage: _Stage,
        config: GenerationConfig,
        bark_rules: list[LogitsProcessor],
        prompt_length: int,
        prompt_ids: torch.Tensor | None,
    ) -> tuple[GenerationConfig, list[LogitsProcessor]]:
        """The processors `generate` would build from `config`, with Bark's own rules merged in.

        Returned as a plain list: `LogitsProcessorList.__call__` inspects every processor's
        signature on every step (~0.25 ms of host time per step), so that check is done once here.
        """
        model = cast(Any, stage.model)
        prepared, _ = model._prepare_generation_config(config)
        if (prepared.num_beams or 1) != 1 or (prepared.num_return_sequences or 1) != 1:
            raise NotImplementedError("the static decoder supports greedy decoding and sampling only")
        model._prepare_special_tokens(prepared, None, device=self.device)
        processors = model._get_logits_processor(
            generation_config=prepared,
            input_ids_seq_length=prompt_length,
            encoder_input_ids=prompt_ids,
            logits_processor=LogitsProcessorList(bark_rules),
            device=self.device,
            model_kwargs={},
        )
        for processor in processors:
            if len(inspect.signature(processor.__call__).parameters) > 2:
                raise NotImplementedError(f"{type(processor).__name__} needs arguments the decoder lacks")
        return prepared, list(processors)

    def _decode(
        self,
        stage: _Stage,
        first_logits: torch.Tensor,
        prompt: torch.Tensor,
        max_new_tokens: int,
        processors: list[LogitsProcessor],
        prepared: GenerationConfig,
        *,
        pad_token: int | None,
        budgets: torch.Tensor | None,
    ) -> torch.LongTensor:
        """Generate after a prefill with `generate`'s rules: pad finished rows, stop when all are done.

        `prepared` (from `_processors`) says whether to sample and which tokens end a row.

        Returns the new tokens only, (rows, steps run), like `generate(...)[:, prompt_length:]`.
        """
        rows, prompt_length = prompt.shape
        if max_new_tokens < 1:
            return cast(torch.LongTensor, prompt.new_zeros((rows, 0)))
        last_position = prompt_length + max_new_tokens - 2
        if last_position >= stage.cache.max_positions:
            raise ValueError(
                f"{stage.name}: a {prompt_length}-token prompt + {max_new_tokens} new tokens exceeds "
                f"{stage.cache.max_positions} positions"
            )
        # The full sequence as `generate` holds it: processors may look at it (repetition penalty).
        sequence = torch.empty((rows, prompt_length + max_new_tokens), dtype=torch.long, device=self.device)
        sequence[:, :prompt_length] = prompt
        do_sample, eos_ids = bool(prepared.do_sample), _eos_ids(prepared)
        eos = torch.tensor(eos_ids, dtype=torch.long, device=self.device) if eos_ids else None
        if eos is not None and pad_token is None:
            pad_token = eos_ids[0]
        unfinished = torch.ones(rows, dtype=torch.bool, device=self.device)
        all_done = torch.zeros(max_new_tokens, dtype=torch.bool, device=self.device)
        logits = first_logits
        steps = 0
        for step in range(max_new_tokens):
            length = prompt_length + step
            seen = cast(torch.LongTensor, sequence[:, :length])
            scores = cast(torch.FloatTensor, logits.to(dtype=torch.float32, copy=True))
            for processor in processors:
                scores = processor(seen, scores)
            if do_sample:
                tokens = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                tokens = torch.argmax(scores, dim=-1)
            if eos is not None:
                tokens = torch.where(unfinished, tokens, torch.full_like(tokens, cast(int, pad_token)))
            sequence[:, length] = tokens
            steps = step + 1
            if eos is not None:
                unfinished &= ~torch.isin(tokens, eos)
            if budgets is not None:
                unfinished &= budgets > steps
            all_done[step] = ~unfinished.any()
            if steps == max_new_tokens:
                break
            if steps % self.stop_check_interval == 0 and bool(all_done[step]):
                break
            self._token[:rows].copy_(tokens)
            logits = self._forward_token(stage, rows, length)
        # With a stop-check interval > 1 a few steps may have run after every row finished.
        finished_at = torch.nonzero(all_done[:steps])
        if finished_at.numel():
            steps = int(finished_at[0, 0].item()) + 1
        return cast(torch.LongTensor, sequence[:, prompt_length : prompt_length + steps])


# -- choosing and building -------------------------------------------------------------------------
@dataclass(frozen=True)
class DecoderChoice:
    """What `select_decoder` built: the decoder (None = transformers' generate), its name, and why
    `auto` did not get its first choice (None when it did, or when the setting was explicit)."""

    decoder: StaticBarkDecoder | None
    name: DecoderKind
    fallback: str | None = None


def choose_decoder(setting: DecoderSetting | str, device: torch.device) -> DecoderKind:
    """auto = CUDA graphs on CUDA, else the static path (faster than transformers on CPU too)."""
    if setting == "auto":
        return "cudagraph" if device.type == "cuda" else CPU_AUTO_DECODER
    if setting == "cudagraph" and device.type != "cuda":
        raise DecoderUnavailable("decoder=cudagraph needs a CUDA device")
    if setting not in ("transformers", "static", "cudagraph"):
        raise ValueError(f"unknown decoder {setting!r}")
    return cast(DecoderKind, setting)


def build_decoder(
    model: BarkModel, kind: DecoderKind, device: torch.device, *, max_batch_size: int = 64
) -> StaticBarkDecoder | None:
    """The decoder for `kind`, or None for transformers' own `generate`; never silently another one.

    Before the static K/V cache is allocated its size is checked against the device's free memory
    (kv_cache.py: KVCacheTooLarge, with the numbers). For `cudagraph` one step is captured and
    replayed against the same step run eagerly; if that fails (driver, allocator, an op that cannot
    be captured) DecoderUnavailable says why. Falling back is `select_decoder`'s decision, under
    `auto` only.
    """
    if kind == "transformers":
        return None
    shapes = [CacheShape.of(model.semantic.config), CacheShape.of(model.coarse_acoustics.config)]
    memory = device_memory(device)
    if memory is not None:
        needed = check_kv_cache_fits(shapes, max_batch_size, model.semantic.input_embeds_layer.weight.dtype, *memory)
        logger.info(
            "decoder K/V cache: %.2f GB for max_batch_size=%d (%.2f of %.2f GB free)",
            needed / 1e9,
            max_batch_size,
            memory[0] / 1e9,
            memory[1] / 1e9,
        )
    if kind == "static":
        return StaticBarkDecoder(model, device, max_batch_size=max_batch_size)
    try:
        decoder = StaticBarkDecoder(model, device, use_cuda_graphs=True, max_batch_size=max_batch_size)
        decoder.check_capture()
    except Exception as error:
        raise DecoderUnavailable(f"decoder=cudagraph cannot run here: {error!r}") from error
    return decoder


def select_decoder(
    model: BarkModel, setting: DecoderSetting | str, device: torch.device, *, max_batch_size: int = 64
) -> DecoderChoice:
    """The decoder for a setting. An explicit one is honoured or the start stops with the reason;
    under `auto`, CUDA graphs that cannot run fall back to the static path (the same steps, run
    eagerly), with a warning, `bark_decoder_fallbacks_total{reason="cudagraph_unavailable"}` and
    the reason in `bark_model_info{decoder_fallback}`. A cache too large for the device is never
    a fallback: it stops the start under every setting."""
    kind = choose_decoder(setting, device)
    if setting != "auto" or kind != "cudagraph":
        return DecoderChoice(build_decoder(model, kind, device, max_batch_size=max_batch_size), kind)
    try:
        return DecoderChoice(build_decoder(model, kind, device, max_batch_size=max_batch_size), kind)
    except DecoderUnavailable as error:
        reason = "cudagraph_unavailable"
        metrics.DECODER_FALLBACKS.labels(reason=reason).inc()
        logger.warning("decoder=auto: %s; decoding with the static cache, eagerly (no CUDA graphs)", error)
    return DecoderChoice(build_decoder(model, "static", device, max_batch_size=max_batch_size), "static", reason)

"""Load Bark and run one batch of chunks through its four stages, trimming each output.

The engine only runs batches; the scheduler decides what goes into them. Stages are called one by
one (as `BarkModel.generate` does internally) so that each is timed, each chunk gets its own
semantic token budget, and every waveform is cut to its own length before it leaves here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import BarkModel, BarkProcessor, StoppingCriteria, StoppingCriteriaList
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkFineGenerationConfig,
    BarkSemanticGenerationConfig,
)
from transformers.utils import is_flash_attn_2_available

from model_server.config import Settings
from model_server.generation.attention import use_sdpa_attention
from model_server.generation.decoding import StaticBarkDecoder, select_decoder
from model_server.generation.speaker_prompt import PromptLimits, SpeakerPrompt
from model_server.generation.voices import VoiceLibrary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """How to sample; chunks batch together only when this (and the voice) is equal."""

    do_sample: bool = True
    semantic_temperature: float = 0.7
    coarse_temperature: float = 0.7
    fine_temperature: float = 0.5
    seed: int | None = None


@dataclass
class BatchOutput:
    """Trimmed waveforms, one per chunk in input order, and the seconds each stage took."""

    waveforms: list[np.ndarray]
    stage_seconds: dict[str, float] = field(default_factory=dict)


class _PerRowTokenBudget(StoppingCriteria):
    """Stop each row of a batched semantic generation at its own token budget.

    `generate` takes one `max_new_tokens` for the whole batch; rows that stop here are padded
    with the pad (= EOS) token, which the coarse stage already treats as "no more speech".
    """

    def __init__(self, budgets: Sequence[int], prompt_length: int, device: torch.device):
        self._budgets = torch.tensor(list(budgets), device=device)
        self._prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self._prompt_length
        return generated >= self._budgets  # type: ignore[return-value]


def tokenize_chunks(tokenizer: Any, texts: Sequence[str], max_length: int, device: torch.device) -> Any:
    """Text ids as Bark's semantic stage wants them: no special tokens, padded to its fixed input length."""
    return tokenizer(
        list(texts),
        return_tensors="pt",
        padding="max_length",
        truncation=True,
        max_length=max_length,
        add_special_tokens=False,
        return_attention_mask=True,
    ).to(device)


def choose_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch sees no CUDA device")
    return torch.device(setting)


def choose_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, setting)


def flash_attention_available(device: torch.device) -> bool:
    """transformers' own test (flash-attn >= 2.3.3 installed, CUDA present) and a CUDA device chosen."""
    return device.type == "cuda" and is_flash_attn_2_available()


def choose_attention(setting: str, device: torch.device) -> str:
    """auto = SDPA everywhere; flash-attention 2 only when asked for (and then it must be able to run).

    Why not flash-attn by default: the semantic and coarse stages, almost all of a request's steps,
    run in `decoding.py`, which computes attention with `scaled_dot_product_attention` whatever this
    setting says. flash-attn would only reach transformers' own forwards: the fine stage and, with
    `decoder=transformers`, the semantic and coarse `generate`. The fine stage's attention is neither
    causal nor masked, which on CUDA in fp16 lets torch's SDPA dispatch to its own built-in
    FlashAttention-2 kernel: the package would add a second copy of that kernel for one stage.
    """
    if setting == "auto":
        return "sdpa"
    if setting == "flash_attention_2" and not flash_attention_available(device):
        raise RuntimeError("attention=flash_attention_2 needs a CUDA device and the flash-attn package (>= 2.3.3)")
    return setting


#: `BarkModel`'s sub-configs whose models have attention layers; the codec (Encodec) has none.
BARK_TRANSFORMER_CONFIGS = ("semantic_config", "coarse_acoustics_config", "fine_acoustics_config")


def attention_implementations(attention: str) -> dict[str, str]:
    """`attn_implementation` per sub-model for `BarkModel.from_pretrained`.

    Given one string, transformers 5 applies it to every sub-model, and Encodec refuses
    `flash_attention_2` ("EncodecModel does not support Flash Attention 2 yet"): the server did not
    start wherever flash-attn was installed. The codec (convolutions and an LSTM, no attention)
    always loads eager. SDPA is ours (attention.py): those models load eager and are switched later.
    """
    loaded_with = "eager" if attention == "sdpa" else attention
    return {"": loaded_with, **dict.fromkeys(BARK_TRANSFORMER_CONFIGS, loaded_with), "codec_config": "eager"}


class BarkEngine:
    """Owns the Bark weights on one device; `generate_batch` is called from one thread only."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = choose_device(settings.device)
        self.dtype = choose_dtype(settings.dtype, self.device)
        self.attention = choose_attention(settings.attention, self.device)
        source = settings.model_source
        logger.info("loading Bark from %s on %s (%s, attention=%s)", source, self.device, self.dtype, self.attention)
        self.processor = BarkProcessor.from_pretrained(source)
        # SDPA is ours (attention.py): load eager, then switch the attention modules in place.
        model = BarkModel.from_pretrained(
            source,
            dtype=self.dtype,
            attn_implementation=attention_implementations(self.attention),
        )
        if self.attention == "sdpa":
            use_sdpa_attention(model)
        self.model: BarkModel = model.to(self.device).eval()  # type: ignore[arg-type]
        generation = self.model.generation_config
        self.sample_rate = int(generation.sample_rate)
        self.codebook_size = int(generation.codebook_size)
        self._semantic_defaults = dict(generation.semantic_config)
        self._coarse_defaults = dict(generation.coarse_acoustics_config)
        self._fine_defaults = dict(generation.fine_acoustics_config)
        self.max_semantic_tokens = int(self._semantic_defaults.get("max_new_tokens") or 768)
        self.voices = VoiceLibrary(self.processor, self.device, settings.voice_aliases, settings.voice_cache_size)
        #: What a speaker prompt may hold for this model (uploads, kept voices, continuity).
        configs = self._configs(Sampling(), 1)
        self.prompt_limits = PromptLimits.of(*configs, self.codebook_size, self.max_semantic_tokens)
        self.source = source
        # An explicit decoder that cannot run, or a K/V cache too large for the device, stops the
        # start here with the reason; under auto a fallback is logged, counted and named.
        choice = select_decoder(self.model, settings.decoder, self.device, max_batch_size=settings.max_batch_size)
        self.decoder: StaticBarkDecoder | None = choice.decoder
        self.decoder_name: str = choice.name
        self.decoder_fallback: str | None = choice.fallback
        logger.info(
            "decoder=%s (setting: %s%s)",
            self.decoder_name,
            settings.decoder,
            f", fell back: {choice.fallback}" if choice.fallback else "",
        )

    def semantic_budget(self, words: int) -> int:
        """Semantic tokens a chunk of `words` words may use (see Settings.semantic_tokens_per_word)."""
        wanted = math.ceil(words * self.settings.semantic_tokens_per_word)
        return max(1, min(self.max_semantic_tokens, max(self.settings.semantic_tokens_min, wanted)))

    def _configs(
        self, sampling: Sampling, max_new_tokens: int
    ) -> tuple[BarkSemanticGenerationConfig, BarkCoarseGenerationConfig, BarkFineGenerationConfig]:
        def with_sampling(defaults: dict[str, Any], temperature: float) -> dict[str, Any]:
            settings = {**defaults, "do_sample": sampling.do_sample}
            settings["temperature"] = temperature if sampling.do_sample else 1.0
            return settings

        semantic = with_sampling(self._semantic_defaults, sampling.semantic_temperature)
        semantic["max_new_tokens"] = max_new_tokens
        coarse = with_sampling(self._coarse_defaults, sampling.coarse_temperature)
        fine = {
            **self._fine_defaults,
            "temperature": sampling.fine_temperature if sampling.do_sample else 1.0,
        }
        return (
            BarkSemanticGenerationConfig(**semantic),
            BarkCoarseGenerationConfig(**coarse),
            BarkFineGenerationConfig(**fine),
        )

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def generate_batch(
        self,
        texts: Sequence[str],
        voice: str | None,
        sampling: Sampling,
        budgets: Sequence[int],
        prompt: SpeakerPrompt | None = None,
    ) -> BatchOutput:
        """Generate one waveform per text in a single batched pass, each trimmed to its length.

        `prompt`: the batch's history when it is not a preset's (a custom voice); `voice` is its key."""
        if len(texts) != len(budgets):
            raise ValueError("one semantic budget per text is required")
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        history = self.voices.history(voice, prompt)
        semantic_config, coarse_config, fine_config = self._configs(sampling, max(budgets))
        encoded = tokenize_chunks(
            self.processor.tokenizer, texts, semantic_config.max_input_semantic_length, self.device
        )
        stages: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            self._synchronize()
            now = time.perf_counter()
            stages[stage] = now - clock
            clock = now

        prompt_length = semantic_config.max_input_semantic_length + 1
        if self.decoder is not None:
            semantic = self.decoder.semantic(
                encoded["input_ids"], encoded["attention_mask"], history, semantic_config, list(budgets)
            )
        else:
            semantic = self.model.semantic.generate(
                encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                history_prompt=history,
                semantic_generation_config=semantic_config,
                stopping_criteria=StoppingCriteriaList([_PerRowTokenBudget(budgets, prompt_length, self.device)]),
                pad_token_id=semantic_config.semantic_pad_token,
            )
        lap("semantic")
        if self.decoder is not None:
            coarse, coarse_lengths = self.decoder.coarse(
                semantic, history, semantic_config, coarse_config, self.codebook_size
            )
        else:
            coarse, coarse_lengths = self.model.coarse_acoustics.generate(
                semantic,
                history_prompt=history,
                semantic_generation_config=semantic_config,
                coarse_generation_config=coarse_config,
                codebook_size=self.codebook_size,
                return_output_lengths=True,
            )
        frame_lengths = coarse_lengths // coarse_config.n_coarse_codebooks
        lap("coarse")
        fine = self.model.fine_acoustics.generate(
            coarse,
            history_prompt=history,
            semantic_generation_config=semantic_config,
            coarse_generation_config=coarse_config,
            fine_generation_config=fine_config,
            codebook_size=self.codebook_size,
        )
        lap("fine")
        # codec_decode trims each sample to its own frame count before the (LSTM) decoder.
        audio = self.model.codec_decode(fine, frame_lengths)
        waveforms = [sample.float().reshape(-1).cpu().numpy() for sample in audio]
        lap("codec_decode")
        return BatchOutput(waveforms=waveforms, stage_seconds=stages)

    def warm_up(self, batch_path: bool = True) -> None:
        """Every voice preset onto the device now, not in the decoding loop at a request's first use.

        `batch_path` (the static scheduler's `generate_batch`): its graphs captured and one short
        generation, so the first request does not pay for lazy initialisation. The continuous
        scheduler never calls that path; its row engine warms up its own (bark_rows.warm_up).
        """
        voice = self.voices.names[0] if self.voices.names else None
        started = time.perf_counter()
        self.voices.preload()
        if not batch_path:
            return
        if self.decoder is not None:
            # Explicit decoder=cudagraph: a shape that cannot be captured stops the start.
            graphs = self.decoder.capture_graphs(strict=self.settings.decoder == "cudagraph")
            logger.info("captured %d CUDA graphs (%d shapes eager)", graphs, len(self.decoder.eager_shapes))
        self.generate_batch(["Warm up."], voice, Sampling(do_sample=False), [min(8, self.max_semantic_tokens)])
        logger.info("warm-up generation took %.2f s", time.perf_counter() - started)

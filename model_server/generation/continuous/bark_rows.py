"""The Bark row engine: admit chunks as rows, step both stages one token per row, retire finished rows.

This is "how a step runs"; what runs next is the scheduler's business (continuous/loop.py). Each
`step()` is one iteration: the semantic rows and the coarse rows each take one batched forward
(different weights, so two forwards when both stages are active) and one batched sampling call with
per-row settings. A row that finishes its semantic tokens moves to the coarse stage at once (its
first window is prefilled into its own slot); a row whose coarse window is full re-prefills its next
window in place; the rows whose coarse tokens are done in a step run the fine stage (fine.py: our own
loop, per-row sampling; batched across them on CUDA) and each its codec, and leave. Rows never wait
for batch mates.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.bark.generation_configuration_bark import BarkFineGenerationConfig

from model_server import metrics
from model_server.generation.continuous.fine import FineRow, generate_fine
from model_server.generation.continuous.rows import Configs, Row, coarse_plan
from model_server.generation.continuous.sampling import (
    RowSampling,
    choose_tokens,
    coarse_scores,
    fold_seed,
    semantic_scores,
)
from model_server.generation.continuous.stepper import RowStepper
from model_server.generation.engine import BarkEngine, Sampling, tokenize_chunks
from model_server.generation.faults import release_cached_memory
from model_server.generation.kv_cache import CacheShape, check_kv_cache_fits, device_memory

logger = logging.getLogger(__name__)

#: transformers' implicit top-k when sampling (GenerationConfig's default; Bark's configs keep it).
TOP_K = 50
#: Mixed into a row's seed for the fine stage's own random stream.
_FINE_STREAM = 0x5EED


class Job(Protocol):
    """What the scheduler hands in: a key (voice, Sampling), a payload (text, budget), a seed slot."""

    key: tuple[str | None, Sampling]
    payload: Any
    seed: int | None


class BarkRowEngine:
    """Rows of many voices, settings and seeds in one decoding loop over a `BarkEngine`'s weights."""

    def __init__(self, engine: BarkEngine, max_rows: int):
        self.engine = engine
        self.device = engine.device
        self.max_rows = max_rows
        decoder = engine.decoder
        use_graphs = decoder is not None and decoder.use_cuda_graphs
        shared = None
        if decoder is not None:  # idle under this loop: its cache holds the semantic rows
            shared = (decoder._semantic.cache.keys, decoder._semantic.cache.values)
        # Both stages are active at once, so the coarse rows need a cache of their own: checked
        # against free memory like the decoder's (kv_cache.py), so a start that cannot fit says so.
        sub_models = [engine.model.coarse_acoustics] + ([] if shared else [engine.model.semantic])
        memory = device_memory(engine.device)
        if memory is not None:
            dtype = engine.model.semantic.input_embeds_layer.weight.dtype
            extra = sum(check_kv_cache_fits([CacheShape.of(m.config)], max_rows, dtype, *memory) for m in sub_models)
            logger.info("continuous rows: %.2f GB of extra K/V cache", extra / 1e9)
        self.stepper = RowStepper(
            engine.model, engine.device, max_rows=max_rows, use_cuda_graphs=use_graphs, semantic_cache=shared
        )
        logger.info("continuous rows: K/V caches of %.1f MB for %d rows", self.stepper.cache_bytes() / 1e6, max_rows)
        self.rows: dict[str, list[Row]] = {"semantic": [], "coarse": []}
        semantic = engine._semantic_defaults
        self._semantic_vocab = int(semantic["semantic_vocab_size"])
        self._eos = int(semantic["semantic_pad_token"])
        self._min_eos_p = semantic.get("min_eos_p")
        # The fine stage's windows (its temperature is each row's own).
        self._fine_config = BarkFineGenerationConfig(**engine._fine_defaults)
        #: Rows finishing together share one fine pass on CUDA (see `_fine_codes`); alone on a CPU.
        self.group_fine = engine.device.type == "cuda"
        vocab = self.stepper.stages["semantic"].vocab
        self._suppressed = torch.ones(vocab, dtype=torch.bool, device=self.device)
        self._suppressed[: self._semantic_vocab] = False
        self._suppressed[self._eos] = False

    @property
    def active(self) -> int:
        return len(self.rows["semantic"]) + len(self.rows["coarse"])

    def capture_graphs(self) -> int:
        return self.stepper.capture_graphs(self.max_rows)

    # -- admission -----------------------------------------------------------------------------
    @torch.inference_mode()
    def admit(self, jobs: Sequence[Job]) -> list[tuple[Job, BaseException]]:
        """Prefill new chunks into semantic slots; they sample their first token at the next step.

        Returns the jobs that failed on their own (an unknown voice, say); the others are active.
        Out-of-memory propagates: the scheduler shrinks the active set and retries.
        """
        failed: list[tuple[Job, BaseException]] = []
        rows: list[Row] = []
        for job in jobs:
            try:
                rows.append(self._row(job))
            except Exception as error:
                failed.append((job, error))
        if not rows:
            return failed
        config = rows[0].configs.semantic
        length = int(config.max_input_semantic_length)
        encoded = tokenize_chunks(self.engine.processor.tokenizer, [row.text for row in rows], length, self.device)
        ids = encoded["input_ids"].long() + config.text_encoding_offset
        ids = ids.masked_fill(~encoded["attention_mask"].bool(), config.text_pad_token)[:, :length]
        ids = F.pad(ids, (0, length - ids.shape[1]), value=config.text_pad_token)
        histories = torch.stack([self._semantic_history(row, length) for row in rows])
        table = self.stepper.stages["semantic"].weights.token_embedding
        infer = torch.full((len(rows), 1), config.semantic_infer_token, dtype=torch.long, device=self.device)
        # Bark's prompt: text and voice history share the first 256 positions (summed), then the infer token.
        embeds = torch.cat([F.embedding(ids, table) + F.embedding(histories, table), F.embedding(infer, table)], dim=1)
        first_slot = len(self.rows["semantic"])
        logits = self.stepper.prefill("semantic", first_slot, embeds).to(torch.float32, copy=True)
        for index, row in enumerate(rows):
            row.position = length + 1
            row.fresh = logits[index]
            self.rows["semantic"].append(row)
        return failed

    def _row(self, job: Job) -> Row:
        voice, sampling = job.key
        text, budget = job.payload.text, int(job.payload.budget)
        if job.seed is None:  # unseeded: a stream of its own, drawn from torch's global generator
            job.seed = (
                fold_seed(sampling.seed) if sampling.seed is not None else int(torch.randint(0, 2**32, ()).item())
            )
        semantic, coarse, fine = self.engine._configs(sampling, budget)
        history = self.engine.voices.prompt(voice) if voice else None
        return Row(job, text, voice, sampling, budget, job.seed, Configs(semantic, coarse, fine), history)

    def _semantic_history(self, row: Row, length: int) -> torch.Tensor:
        pad = row.configs.semantic.semantic_pad_token
        if row.history is None:
            return torch.full((length,), pad, dtype=torch.long, device=self.device)
        history = row.history["semantic_prompt"].to(self.device).long()[-length:]
        return F.pad(history, (0, length - history.shape[0]), value=pad)

    # -- one iteration -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[tuple[Job, np.ndarray | BaseException]]:
        """One token for every active row of both stages; returns the rows that left, with audio or error."""
        done: list[tuple[Job, np.ndarray | BaseException]] = []
        if self.rows["semantic"]:
            self._step_semantic(done)
        if self.rows["coarse"]:
            self._step_coarse(done)
        return done

    def _logits(self, stage: str) -> torch.Tensor:
        """Logits for every row of `stage`: a batched step for rows that fed a token, prefill logits for fresh rows."""
        rows = self.rows[stage]
        fresh = [index for index, row in enumerate(rows) if row.fresh is not None]
        if len(fresh) == len(rows):
            logits = torch.stack([row.fresh for row in rows if row.fresh is not None])
        else:
            # Fresh rows ride along at their next position: that K/V is overwritten by their real step.
            tokens = torch.tensor([row.next_token for row in rows], dtype=torch.long, device=self.device)
            logits = self.stepper.step(stage, tokens, [row.position for row in rows]).to(torch.float32, copy=True)
            for row in rows:
                if row.fresh is None:
                    row.position += 1
            for index in fresh:
                logits[index] = cast(torch.Tensor, rows[index].fresh)
        for row in rows:
            row.fresh = None
        return logits

    def _sampling(self, rows: list[Row]) -> RowSampling:
        return RowSampling.of(
            [row.sampling.do_sample for row in rows],
            [row.temperature for row in rows],
            [row.seed for row in rows],
            [row.draws for row in rows],
            self.device,
        )

    def _step_semantic(self, done: list[tuple[Job, np.ndarray | BaseException]]) -> None:
        rows = self.rows["semantic"]
        settings = self._sampling(rows)
        scores = semantic_scores(self._logits("semantic"), self._suppressed, self._eos, self._min_eos_p)
        tokens = choose_tokens(scores, settings, TOP_K).tolist()
        leaving: list[Row] = []
        for row, token in zip(rows, tokens, strict=True):
            row.draws += 1
            if token != self._eos:
                row.semantic.append(int(token))
            if token == self._eos or len(row.semantic) >= row.budget:
                leaving.append(row)
            else:
                row.next_token = int(token)
        if not leaving:
            return
        self._leave("semantic", leaving)
        for row in leaving:
            try:
                self._enter_coarse(row, done)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as error:
                done.append((row.job, error))

    def _enter_coarse(self, row: Row, done: list[tuple[Job, np.ndarray | BaseException]]) -> None:
        row.stage, row.stage_started = "coarse", time.perf_counter()
        model = self.engine.model.coarse_acoustics
        row.coarse = coarse_plan(row, model, self.engine.codebook_size, self.device)
        if row.coarse.output_length == 0:  # no semantic tokens: no audio (an empty waveform)
            done.append((row.job, np.zeros(0, dtype=np.float32)))
            return
        self._prefill_window(row, len(self.rows["coarse"]))  # into the next free slot, then it joins
        self.rows["coarse"].append(row)

    def _prefill_window(self, row: Row, slot: int) -> None:
        assert row.coarse is not None
        prompt = row.coarse.next_window_prompt(row.configs.coarse, self.device)
        table = self.stepper.stages["coarse"].weights.token_embedding
        logits = self.stepper.prefill("coarse", slot, F.embedding(prompt, table)[None])
        row.fresh = logits[0].to(torch.float32, copy=True)
        row.position = int(prompt.shape[0])

    def _step_coarse(self, done: list[tuple[Job, np.ndarray | BaseException]]) -> None:
        rows = self.rows["coarse"]
        settings = self._sampling(rows)
        plans = [row.coarse for row in rows]
        parity = torch.tensor([plan.window_step % 2 for plan in plans if plan], dtype=torch.long, device=self.device)
        codebook = self.engine.codebook_size
        scores = coarse_scores(self._logits("coarse"), parity, self._semantic_vocab, codebook)
        tokens = choose_tokens(scores, settings, TOP_K).tolist()
        finished: list[Row] = []
        for slot, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            plan = row.coarse
            assert plan is not None
            row.draws += 1
            plan.tokens.append(int(token))
            plan.window_step += 1
            if plan.window_step < plan.window_new:
                row.next_token = int(token)
            elif plan.generated < plan.output_length:
                self._prefill_window(row, slot)  # the next sliding window, re-prefilled in place
            else:
                finished.append(row)
        if not finished:
            return
        self._leave("coarse", finished)
        for row, outcome in zip(finished, self._fine_codes(finished), strict=True):
            try:
                done.append((row.job, outcome if isinstance(outcome, BaseException) else self._finish(row, outcome)))
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as error:
                done.append((row.job, error))

    def _fine_codes(self, rows: list[Row]) -> list[torch.Tensor | BaseException]:
        """Fine codes (n_fine, frames) of the rows that finished their coarse tokens in this step.

        On CUDA they share one batched pass (launch-bound: the probes' fine stage took 22 ms for one
        chunk, 235 ms for 32); on a CPU each row runs alone, which measured faster there. A pass that
        fails (out of memory included) runs its rows again one by one, so a failure stays with its row.
        """
        outcomes: list[torch.Tensor | BaseException | None] = [None] * len(rows)
        prepared: list[tuple[int, FineRow]] = []
        for index, row in enumerate(rows):
            try:
                prepared.append((index, self._fine_row(row)))
            except Exception as error:
                outcomes[index] = error
        groups = [prepared] if self.group_fine else [[item] for item in prepared]
        for group in groups:
            started = time.perf_counter()
            codes: list[torch.Tensor] | None = None
            if len(group) > 1:
                try:
                    codes = self._fine_pass([item for _, item in group])
                except Exception as error:  # then each row alone, so a failure stays with its row
                    if isinstance(error, torch.cuda.OutOfMemoryError):
                        release_cached_memory(self.device)
            for slot, (index, item) in enumerate(group):
                outcomes[index] = codes[slot] if codes is not None else self._fine_codes_alone(item)
            metrics.STAGE_LATENCY.labels(stage="fine").observe(time.perf_counter() - started)
            metrics.FINE_PASS_ROWS.observe(len(group))
        return [outcome if outcome is not None else RuntimeError("no fine codes were made") for outcome in outcomes]

    def _fine_codes_alone(self, fine_row: FineRow) -> torch.Tensor | BaseException:
        """One row's pass: its own error, or out of memory for the loop to handle (alone, it cannot shrink)."""
        try:
            return self._fine_pass([fine_row])[0]
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:
            return error

    def _fine_pass(self, group: list[FineRow]) -> list[torch.Tensor]:
        codes = generate_fine(self.engine.model.fine_acoustics, group, self._fine_config, self.engine.codebook_size)
        self.engine._synchronize()
        return codes

    def _fine_row(self, row: Row) -> FineRow:
        plan = row.coarse
        assert plan is not None
        codebooks = row.configs.coarse.n_coarse_codebooks
        coarse = torch.tensor(plan.tokens[plan.history_length :], dtype=torch.long, device=self.device)
        codes = torch.remainder(coarse.view(-1, codebooks) - self._semantic_vocab, self.engine.codebook_size)
        history = row.history["fine_prompt"].to(self.device).long().T if row.history is not None else None
        return FineRow(codes, history, row.configs.fine.temperature, row.seed ^ _FINE_STREAM)

    def _finish(self, row: Row, fine: torch.Tensor) -> np.ndarray:
        """The codec for one row's fine codes (n_fine, frames): its waveform, trimmed to its frames."""
        plan = row.coarse
        assert plan is not None
        frames = torch.tensor([plan.output_length // row.configs.coarse.n_coarse_codebooks], device=self.device)
        started = time.perf_counter()
        audio = self.engine.model.codec_decode(fine[None], frames)
        waveform = audio[0].float().reshape(-1).cpu().numpy()
        metrics.STAGE_LATENCY.labels(stage="codec_decode").observe(time.perf_counter() - started)
        return waveform

    # -- leaving -------------------------------------------------------------------------------
    def _leave(self, stage: str, rows: list[Row]) -> None:
        """Rows done with `stage`: out of its cache, and each one's time in the stage observed."""
        self._compact(stage, rows)
        for row in rows:
            metrics.STAGE_LATENCY.labels(stage=stage).observe(time.perf_counter() - row.stage_started)

    def _compact(self, stage: str, leaving: Sequence[Row]) -> None:
        """Drop rows; the last row moves into each hole (one cache copy per leaving row, not a shift).

        Slots are handled from the highest down, so the row moved into a hole never leaves itself.
        """
        rows = self.rows[stage]
        gone = {id(row) for row in leaving}
        for slot in sorted((index for index, row in enumerate(rows) if id(row) in gone), reverse=True):
            last = len(rows) - 1
            if slot != last:
                self.stepper.move(stage, last, slot, rows[last].position + 1)
                rows[slot] = rows[last]
            rows.pop()

    def drop(self, jobs: Sequence[Job]) -> None:
        """Remove the rows of cancelled jobs (client gone, timeout) before the next step."""
        wanted = {id(job) for job in jobs}
        for stage, rows in self.rows.items():
            leaving = [row for row in rows if id(row.job) in wanted]
            if leaving:
                self._compact(stage, leaving)

    def evict_all(self) -> list[Job]:
        """Remove every row (after an out-of-memory or a failed step); returns their jobs."""
        jobs = [row.job for rows in self.rows.values() for row in rows]
        self.rows = {"semantic": [], "coarse": []}
        with contextlib.suppress(Exception):
            self.engine._synchronize()
        return jobs

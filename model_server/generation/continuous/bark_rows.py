"""The Bark row engine: admit chunks as rows, step both stages one token per row, hand finished rows on.

This is "how an iteration runs"; what runs next is the scheduler's business (continuous/loop.py).
Each `step()` is one iteration, shaped for a GPU (issue #21):

    launch:  one captured step per active stage (stepper.py): the rows' state lives on the device
             (slots.py), so nothing is built from host data; then copy the step's tokens and
             statuses to pinned memory and record an event (late_read.py)
    read:    the previous iteration's tokens and statuses, whose copy finished meanwhile
    act:     only on what changed: rows whose semantic tokens are done move to the coarse stage;
             rows whose coarse window is full re-prefill the next one; rows that entered or
             re-entered coarse are prefilled together in one call; rows with all their coarse tokens
             go to the fine stage and codec on their own thread (finisher.py) and leave

An iteration in which no row joins, leaves or changes window makes no host wait and touches no
host data besides the one late read. A row never waits for batch mates; a row that has just
finished rides one more step, masked, before the host sees it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.bark.generation_configuration_bark import BarkFineGenerationConfig

from model_server import metrics
from model_server.generation.attention import flash_decode_kernel
from model_server.generation.continuous.finisher import Finisher
from model_server.generation.continuous.late_read import LateReader
from model_server.generation.continuous.rows import (
    Configs,
    Row,
    coarse_plan,
    decode_row,
    fine_codes,
    semantic_prompts,
)
from model_server.generation.continuous.rules import TOP_K, CoarseRules, SemanticRules
from model_server.generation.continuous.sampling import fold_seed
from model_server.generation.continuous.slots import DONE, IDLE, WINDOW_FULL
from model_server.generation.continuous.stepper import RowStepper
from model_server.generation.engine import BarkEngine, Sampling
from model_server.generation.kv_cache import CacheShape, check_kv_cache_fits, device_memory
from model_server.generation.speaker_prompt import KeptChunk

__all__ = ["TOP_K", "BarkRowEngine", "Job"]

logger = logging.getLogger(__name__)

_STAGES = ("semantic", "coarse")


class Job(Protocol):
    """What the scheduler hands in: a key (voice, Sampling), a payload (text, budget), a seed slot.

    The payload may also carry `history` (a `SpeakerPrompt`: a custom voice, or the previous chunk's
    tokens, used instead of the key's preset) and `keep_tokens` (the outcome is then a `KeptChunk`:
    the waveform and the row's own semantic, coarse and fine tokens).
    """

    key: tuple[str | None, Sampling]
    payload: Any
    seed: int | None


Outcome = tuple[Any, Any]  # (job, waveform or its own error)


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
            engine.model,
            engine.device,
            max_rows=max_rows,
            use_cuda_graphs=use_graphs,
            semantic_cache=shared,
            flash_attn_with_kvcache=flash_decode_kernel(engine.attention, engine.device, engine.dtype),
        )
        logger.info("continuous rows: K/V caches of %.1f MB for %d rows", self.stepper.cache_bytes() / 1e6, max_rows)
        self.rows: dict[str, list[Row]] = {stage: [] for stage in _STAGES}
        semantic = engine._semantic_defaults
        self._semantic_vocab = int(semantic["semantic_vocab_size"])
        self._eos = int(semantic["semantic_pad_token"])
        coarse = engine._coarse_defaults
        self._configure_stages(semantic, coarse)
        # The fine stage's windows (its temperature is each row's own).
        self._fine_config = BarkFineGenerationConfig(**engine._fine_defaults)
        #: Rows finishing together share one fine pass on CUDA; alone on a CPU (finisher.py).
        self.finisher = Finisher(
            lambda rows: self._fine_pass(rows),  # looked up at each call: tests stand in for either
            lambda row, fine: self._finish(row, fine),
            device=engine.device,
            group=self.device.type == "cuda",
        )
        self.reader = LateReader(self.stepper.out)
        #: Joins, leaves, stage moves and window prefills so far (benchmarks tell steady iterations by it).
        self.events = 0

    def _configure_stages(self, semantic: dict[str, Any], coarse: dict[str, Any]) -> None:
        vocab = self.stepper.stages["semantic"].vocab
        suppressed = torch.ones(vocab, dtype=torch.bool, device=self.device)
        suppressed[: self._semantic_vocab] = False
        suppressed[self._eos] = False
        stage = self.stepper.stages["semantic"]
        stage.rules = SemanticRules(suppressed, self._eos, semantic.get("min_eos_p"))
        stage.prompt_length = int(semantic["max_input_semantic_length"]) + 1
        stage = self.stepper.stages["coarse"]
        stage.rules = CoarseRules(self._semantic_vocab, self.engine.codebook_size)
        stage.prompt_length = int(coarse["max_coarse_input_length"]) + 1 + int(coarse["max_coarse_history"])

    @property
    def active(self) -> int:
        """Rows in the semantic and coarse stages (the ones that hold cache slots)."""
        return len(self.rows["semantic"]) + len(self.rows["coarse"])

    @property
    def pending(self) -> int:
        """Rows past their coarse tokens, in the fine stage or codec, not yet collected."""
        return self.finisher.pending

    @property
    def finishing(self) -> set[int]:
        """id() of the jobs in the fine stage or codec: they hold no row, so fair admission does not count them."""
        return self.finisher.job_ids()

    @property
    def late_reads(self) -> int:
        return self.reader.reads

    def set_wake(self, wake: Callable[[], None]) -> None:
        """The scheduler's callback for when finished rows are ready (called from the finisher's thread)."""
        self.finisher.set_wake(wake)

    def capture_graphs(self) -> int:
        return self.stepper.capture_graphs(self.max_rows)

    def warm_up(self) -> None:
        """One short row through every stage and window path before the server turns ready, so the
        first request does not pay for lazy initialisation (or a prefill graph's capture)."""
        voices = self.engine.voices.names
        job = SimpleNamespace(
            key=(voices[0] if voices else None, Sampling(do_sample=False)),
            payload=SimpleNamespace(text="Warm up.", budget=min(8, self.engine.max_semantic_tokens)),
            seed=0,
        )
        started = time.perf_counter()
        outcomes = self.admit([job])
        while self.active or self.pending:
            outcomes += self.step() if self.active else self.collect()
            if not self.active and self.pending:
                time.sleep(0.005)
        for _, outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        logger.info("continuous warm-up took %.2f s", time.perf_counter() - started)

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
        self.events += 1
        table = self.stepper.stages["semantic"].weights.token_embedding
        embeds = semantic_prompts(rows, self.engine.processor.tokenizer, table, self.device)
        first = len(self.rows["semantic"])
        self._join("semantic", list(range(first, first + len(rows))), rows, list(embeds))
        self.rows["semantic"].extend(rows)
        return failed

    def _row(self, job: Job) -> Row:
        voice, sampling = job.key
        text, budget = job.payload.text, int(job.payload.budget)
        if job.seed is None:  # unseeded: a stream of its own, drawn from torch's global generator
            job.seed = (
                fold_seed(sampling.seed) if sampling.seed is not None else int(torch.randint(0, 2**32, ()).item())
            )
        semantic, coarse, fine = self.engine._configs(sampling, budget)
        payload_history = getattr(job.payload, "history", None)
        history = self.engine.voices.history(voice, payload_history)
        history_host = self.engine.voices.host_history(voice, payload_history)
        configs = Configs(semantic, coarse, fine)
        return Row(job, text, voice, sampling, budget, job.seed, configs, history, history_host)

    def _join(self, stage_name: str, slots: list[int], rows: list[Row], prompts: list[torch.Tensor]) -> None:
        """Prefill `rows` into `slots` (one call for all) and write their state there."""
        logits = self.stepper.prefill(stage_name, slots, prompts)
        coarse = stage_name == "coarse"
        for row, prompt in zip(rows, prompts, strict=True):
            row.position, row.fresh = int(prompt.shape[0]), True
        plans = [row.coarse for row in rows] if coarse else []
        self.stepper.stages[stage_name].slots.join(
            slots,
            logits,
            [row.position for row in rows],
            seeds=[row.seed for row in rows],
            draws=[row.draws for row in rows],
            temperature=[row.temperature if row.sampling.do_sample else 1.0 for row in rows],
            do_sample=[row.sampling.do_sample for row in rows],
            budget=[plan.window_new for plan in plans if plan] if coarse else [row.budget for row in rows],
            last_window=[plan.generated + plan.window_new >= plan.output_length for plan in plans if plan]
            if coarse
            else [False] * len(rows),
        )

    # -- one iteration -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[Outcome]:
        """Launch one step of every stage with rows, act on the previous step's outputs; returns the
        rows that left (with audio from the finisher, or their own error)."""
        launched: dict[str, list[Row]] = {}
        for stage_name in _STAGES:
            rows = self.rows[stage_name]
            if not rows:
                continue
            self.stepper.step(stage_name, len(rows), max(row.position for row in rows))
            for row in rows:  # the host's mirror of what the step did to positions
                if row.fresh:
                    row.fresh = False
                else:
                    row.position += 1
            launched[stage_name] = list(rows)
        previous = self.reader.launched(self.stepper.out, launched) if launched else self.reader.drain()
        outcomes: list[Outcome] = []
        if previous is not None:
            self._act(self.reader.read(previous), previous.rows, outcomes)
        outcomes.extend(self.collect())
        return outcomes

    def collect(self) -> list[Outcome]:
        """Finished rows' outcomes, without stepping (the loop has no rows to step)."""
        return self.finisher.collect()

    def _act(self, outputs: np.ndarray, launched: dict[str, list[Row]], outcomes: list[Outcome]) -> None:
        """Take one iteration's tokens and statuses into the rows; move, re-window or finish rows."""
        semantic_done: list[Row] = []
        windows: list[Row] = []
        finished: list[Row] = []
        for stage_name, rows in launched.items():
            index = 0 if stage_name == "semantic" else 1
            for slot, row in enumerate(rows):
                token, status = int(outputs[index, slot, 0]), int(outputs[index, slot, 1])
                if status == IDLE or row.gone or row.stage != stage_name:
                    continue
                row.draws += 1
                if stage_name == "semantic":
                    if token != self._eos:
                        row.semantic.append(token)
                    if status == DONE:
                        semantic_done.append(row)
                    continue
                assert row.coarse is not None
                row.coarse.tokens.append(token)
                row.coarse.window_step += 1
                if status == WINDOW_FULL:
                    windows.append(row)
                elif status == DONE:
                    finished.append(row)
        if finished:
            self._leave("coarse", finished)
            self.finisher.submit(finished)
        entering: list[Row] = []
        if semantic_done:
            self._leave("semantic", semantic_done)
            for row in semantic_done:
                try:
                    if self._enter_coarse(row):
                        entering.append(row)
                    else:  # no semantic tokens: no audio (an empty waveform)
                        outcomes.append((row.job, np.zeros(0, dtype=np.float32)))
                except torch.cuda.OutOfMemoryError:
                    raise
                except Exception as error:
                    outcomes.append((row.job, error))
        if windows or entering:
            self._prefill_windows(windows, entering)

    def _enter_coarse(self, row: Row) -> bool:
        """Plan the row's coarse windows; False if it has nothing to generate."""
        row.stage, row.stage_started = "coarse", time.perf_counter()
        model = self.engine.model.coarse_acoustics
        row.coarse = coarse_plan(row, model, self.engine.codebook_size, self.device)
        return row.coarse.output_length > 0

    def _prefill_windows(self, windows: list[Row], entering: list[Row]) -> None:
        """Next windows of rows in place and first windows of rows entering coarse, in one prefill."""
        self.events += 1
        coarse_rows = self.rows["coarse"]
        slot_of = {id(row): slot for slot, row in enumerate(coarse_rows)}
        slots = [slot_of[id(row)] for row in windows] + list(range(len(coarse_rows), len(coarse_rows) + len(entering)))
        rows = windows + entering
        table = self.stepper.stages["coarse"].weights.token_embedding
        prompts = []
        for row in rows:
            assert row.coarse is not None
            prompts.append(F.embedding(row.coarse.next_window_prompt(row.configs.coarse, self.device), table))
        self._join("coarse", slots, rows, prompts)
        coarse_rows.extend(entering)

    # -- the fine stage and codec (on the finisher's thread) -----------------------------------
    def _fine_pass(self, rows: list[Row]) -> list[torch.Tensor]:
        model, codebook_size = self.engine.model, self.engine.codebook_size
        return fine_codes(model, rows, self._fine_config, self._semantic_vocab, codebook_size, self.device)

    def _finish(self, row: Row, fine: torch.Tensor) -> np.ndarray | KeptChunk:
        return decode_row(self.engine.model, row, fine, self._semantic_vocab, self.engine.codebook_size, self.device)

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
        self.events += 1
        rows = self.rows[stage]
        slots = self.stepper.stages[stage].slots
        gone = {id(row) for row in leaving}
        for slot in sorted((index for index, row in enumerate(rows) if id(row) in gone), reverse=True):
            last = len(rows) - 1
            if slot != last:
                self.stepper.move(stage, last, slot, rows[last].position + 1)
                rows[slot] = rows[last]
            else:
                slots.free(slot)
            rows.pop()

    def drop(self, jobs: Sequence[Job]) -> None:
        """Remove the rows of cancelled jobs (client gone, timeout) before the next step."""
        wanted = {id(job) for job in jobs}
        for stage, rows in self.rows.items():
            leaving = [row for row in rows if id(row.job) in wanted]
            for row in leaving:
                row.gone = True
            if leaving:
                self._compact(stage, leaving)
        self.finisher.drop(jobs)

    def evict_all(self) -> list[Job]:
        """Remove every row of both stages (after an out-of-memory or a failed step); returns their jobs.

        Rows already in the fine stage are not evicted: they finish on their own thread.
        """
        rows = [row for stage_rows in self.rows.values() for row in stage_rows]
        for row in rows:
            row.gone = True
        self.rows = {stage: [] for stage in _STAGES}
        for stage in self.stepper.stages.values():
            stage.slots.free_all()
        self.reader.forget()
        with contextlib.suppress(Exception):
            self.engine._synchronize()
        return [row.job for row in rows]

    def fail_all(self) -> list[Job]:
        """Every job in the engine, the fine stage's included (a fatal device error: nothing will finish)."""
        return self.evict_all() + self.finisher.drain()

    def close(self) -> None:
        self.finisher.close()

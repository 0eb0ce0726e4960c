"""Row state on the device, in fixed slots: written when a row joins, moves or leaves, never per step.

Before issue #21 every step rebuilt each row's settings (do_sample, temperature, noise key), its fed
token and its position from Python lists, a blocking host-to-device copy each (about 11 host waits
per iteration with both stages active). Here each stage keeps one tensor per field, indexed by
slot; the captured step reads them and advances them in place (tokens, positions, draw counters,
counts, end flags), so an iteration in which no row joins or leaves touches no host data at all.
vLLM's Model Runner V2 keeps its batch the same way (`input_batch.py`, `sample/states.py`).

Fields, per slot:
- `tokens`: the token the row feeds at the next step; `positions`: where it is written.
- `active`: the row steps this iteration (False for a free slot, or a row waiting for the host:
  its stage is done or its coarse window is full); the step clears it when it sets a status.
- `fresh`: the row was just prefilled: this step's logits come from `pending` (the prefill's last
  logits) and its position stays (the token it samples is written there at the next step).
- `seeds`, `draws`: the row's noise stream and how many draws it has made (`sampling.row_keys`).
- `temperature` (1.0 where greedy), `do_sample`.
- `budget`, `generated`: semantic: the row's token budget and its own tokens so far; coarse: the
  current window's length and the tokens generated in it (its parity picks the codebook).
- `last_window`: coarse only: a full window ends the row instead of asking for the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

#: A step's status per row, as the host reads it one iteration later.
IDLE = -1  # the row did not step (free slot, or waiting for the host)
RUNNING = 0
DONE = 1  # semantic: EOS or budget reached; coarse: all of the row's coarse tokens generated
WINDOW_FULL = 2  # coarse: the window is full; the host re-prefills the next one


def upload(values: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Host data on the device without making the host wait for the GPU.

    `torch.tensor(data, device=cuda)` copies from pageable memory and then synchronises the stream:
    the host waits for every step already queued. Through pinned memory with `non_blocking` the copy
    is queued behind them instead (the caching host allocator keeps the buffer until it is done).
    """
    cuda = device.type == "cuda"
    return torch.tensor(values, dtype=dtype, pin_memory=cuda).to(device, non_blocking=cuda)


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the device, queued as `upload` queues host data (pinned, `non_blocking`)."""
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


@dataclass
class StageSlots:
    tokens: torch.Tensor
    positions: torch.Tensor
    active: torch.Tensor
    fresh: torch.Tensor
    pending: torch.Tensor
    seeds: torch.Tensor
    draws: torch.Tensor
    temperature: torch.Tensor
    do_sample: torch.Tensor
    budget: torch.Tensor
    generated: torch.Tensor
    last_window: torch.Tensor

    @classmethod
    def allocate(cls, slots: int, vocab: int, device: torch.device) -> StageSlots:
        def longs() -> torch.Tensor:
            return torch.zeros(slots, dtype=torch.long, device=device)

        def flags() -> torch.Tensor:
            return torch.zeros(slots, dtype=torch.bool, device=device)

        return cls(
            tokens=longs(),
            positions=longs(),
            active=flags(),
            fresh=flags(),
            pending=torch.zeros(slots, vocab, dtype=torch.float32, device=device),
            seeds=longs(),
            draws=longs(),
            temperature=torch.ones(slots, dtype=torch.float32, device=device),
            do_sample=flags(),
            budget=longs(),
            generated=longs(),
            last_window=flags(),
        )

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, field.name) for field in fields(self)]

    def rows(self, count: int) -> StageSlots:
        """Views of slots [0, count): what a step of `count` rows reads and advances in place."""
        return StageSlots(*(tensor[:count] for tensor in self.tensors()))

    def join(
        self, slots: Sequence[int], logits: torch.Tensor, positions: Sequence[int], **values: Sequence[Any]
    ) -> None:
        """Rows prefilled into `slots`: their first token comes from `logits` at the next step.

        `values` name the other fields (seeds, draws, temperature, do_sample, budget, last_window);
        one host-to-device copy per field, at a join only, queued behind the running steps.
        """
        device = self.tokens.device
        index = upload(list(slots), torch.long, device)
        self.pending.index_copy_(0, index, logits.to(self.pending.dtype))
        self.positions.index_copy_(0, index, upload(list(positions), torch.long, device))
        self.active.index_fill_(0, index, True)
        self.fresh.index_fill_(0, index, True)
        self.generated.index_fill_(0, index, 0)
        for name, column in values.items():
            target: torch.Tensor = getattr(self, name)
            target.index_copy_(0, index, upload(list(column), target.dtype, device))

    def move(self, source: int, target: int) -> None:
        """Slot `source`'s row now lives in `target` (compaction after a row left); `source` is freed."""
        for tensor in self.tensors():
            tensor[target] = tensor[source]
        self.active[source] = False

    def snapshot(self, count: int) -> Callable[[], None]:
        """Copies of slots [0, count); returns what puts them back (a graph capture runs the step for
        real, and must not advance the rows it was captured over)."""
        saved = [tensor[:count].clone() for tensor in self.tensors()]

        def restore() -> None:
            for tensor, copy in zip(self.tensors(), saved, strict=True):
                tensor[:count].copy_(copy)

        return restore

    def free(self, slot: int) -> None:
        self.active[slot] = False

    def free_all(self) -> None:
        self.active.zero_()

"""Continuous (iteration-level) batching: rows of any voice, settings and seed share decoding steps.

`loop.ContinuousScheduler` decides what runs next; `bark_rows.BarkRowEngine` runs a step (with
`stepper.RowStepper`'s per-row-position forward and `sampling`'s per-row sampling); `rows` holds
one chunk's state. Chosen by `BARK_SCHEDULER=continuous` (the default) in `scheduler_choice.build_scheduler`.
"""

"""`microgpt bench`: every engine on the same documents, side by side.

For each configuration (a sweep: every combination of the given n_layer,
n_embd and block_size values) and each engine, a fresh Python process runs the
worker (measure.py): it builds the run as ``microgpt train`` does and times the
trainer's own steps and their three phases: forward (building the loss graph),
backward, optimizer. A fresh process per engine keeps the measurements apart:
the pure engine runs as the reference program runs (the garbage collector as
Python sets it, nothing else in the heap), and its peak RSS is its own.
runner.py starts the workers and merges repeated runs; report.py prints.

Reported per engine: ms per step (median and min-max over the timed steps),
the speedup against pure, forward/backward/optimizer medians, graph nodes per
step (nodes created by the step's forward, counted by the engine itself: the
arena's growth for compiled, Value constructions for pure), bytes per node
(compiled: the arena's columns per node; pure: tracemalloc's peak while one
step's graph is built, over its nodes), peak RSS while stepping and its growth
over the RSS before the first step, and whether the losses of all engines agree
exactly (==) step by step.
"""
from .report import config_label, print_report
from .runner import configurations, run

__all__ = ["configurations", "config_label", "print_report", "run"]

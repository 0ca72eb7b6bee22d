"""The reference script (tests/scripts/reference.py) run by its own main(), each Value class
in turn in fresh processes: a step of the swapped script against a step with its own class,
as a user running `python reference.py NAMES` sees it.

    pytest bench/bench_script_turns.py --benchmark-only -s

Each round runs the script once per class (`main([script, NAMES, 1000, STEPS])` in a fresh
interpreter), the classes taking turns, so a change in the machine's load falls on every
class alike. A step is timed as main() runs it: from one train_step's start to the next's
(the last: to main's return). That takes in the step's forward, backward and Adam loop,
main()'s print of the loss, and the freeing of the last step's graph when its loss is
replaced. Each run gives the median of its steps from WARMUP on (every class runs the same
documents); the figure is the median of the ROUNDS runs, and the spread the range of the
per-round ratios. numbers-c and no-op-c (swapped_script.py) are the floors: what a C Value
that keeps no graph, or does nothing, costs the same script.

bench_reference_script.py times train_step in one process with pytest-benchmark, with the
loss dropped at once and kept; this file runs the script as it is, so it has one reading.
"""
import json
import os
import statistics
import subprocess
import sys

import pytest

from microgpt import available_engines
from conftest import benchmarks_disabled
from support import PACKAGE_PARENT, child_env, load_golden
from swapped_script import C_VALUES, build_c_value, write_script

NUM_STEPS = 1000  # the learning-rate schedule's length (the golden run's)
WARMUP = 2  # steps run before the timed ones (the compiled arena's first growth)
ROUNDS, STEPS = 5, 42  # with --benchmark-only; a pass with --benchmark-disable runs 1 round of 4 steps
VARIANTS = ["pure", "compiled", "numbers-c", "no-op-c"]

# The child: the script imported as a module, its train_step wrapped to note each step's
# start, its main() run; then one line of JSON: the steps' times in seconds.
CHILD = """
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("reference_script", sys.argv[1])
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
starts, train_step = [], script.train_step
def timed_step(*args):
    starts.append(time.perf_counter())
    return train_step(*args)
script.train_step = timed_step
script.main(sys.argv[1:])
starts.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(starts, starts[1:])]))
"""


def run_script(script, names_txt, steps, pythonpath):
    """One fresh run of the script for `steps` steps: (each step's seconds, its losses)."""
    env = child_env()
    if pythonpath:  # a floor's module, built by build_c_value
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env["PYTHONPATH"]])
    env.pop("MICROGPT_ENGINE", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(script), str(names_txt), str(NUM_STEPS), str(steps)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=PACKAGE_PARENT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *lines, times = proc.stdout.splitlines()
    losses = [float(line.split()[-1]) for line in lines if line.startswith("step ")]
    return json.loads(times), losses


def take_turns(runs, variants, rounds):
    """runs[variant]() once per variant per round, the variants in turn: each variant's
    per-run medians, in round order."""
    medians = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            medians[v].append(runs[v]())
    return medians


def summary(medians):
    """The median over the runs of each variant, and pure over each other variant: the
    ratio of the medians and the range of the rounds' own ratios."""
    out = {v: statistics.median(ms) for v, ms in medians.items()}
    ratios = {}
    for v, ms in medians.items():
        if v != "pure":
            per_round = [p / m for p, m in zip(medians["pure"], ms)]
            ratios[v] = (out["pure"] / out[v], min(per_round), max(per_round))
    return out, ratios


@pytest.mark.skipif("compiled" not in available_engines(), reason="the compiled engine is not built here")
def test_script_steps_taking_turns(benchmark, names_txt, tmp_path, request):
    """A step of the script as its main() runs it, per class, the classes in turn."""
    quick = benchmarks_disabled(request.config)
    rounds, steps = (1, WARMUP + 2) if quick else (ROUNDS, STEPS)
    variants = VARIANTS[:2] if quick else VARIANTS  # the floors' builds only where the figure is made
    golden = load_golden("names_default_1000_steps.json")["losses"][:steps]
    runs = {}
    for v in variants:
        pythonpath = build_c_value(tmp_path, v) if v in C_VALUES else None
        script = write_script(tmp_path, v)

        def one_run(v=v, script=script, pythonpath=pythonpath):
            times, losses = run_script(script, names_txt, steps, pythonpath)
            assert len(times) == steps
            if v in ("pure", "compiled"):  # the same run: the reference's losses, ==
                assert losses == golden
            return statistics.median(times[WARMUP:])

        runs[v] = one_run
    results = {}

    def measure():
        results["medians"] = take_turns(runs, variants, rounds)

    benchmark.group = "reference script, run by its main()"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    medians, ratios = summary(results["medians"])
    assert all(m > 0 for m in medians.values())
    benchmark.extra_info.update(engine="compiled", rounds=rounds, steps=f"{WARMUP}..{steps - 1}",
                                step_seconds=medians, runs=results["medians"],
                                turns={v: list(r) for v, r in ratios.items()})

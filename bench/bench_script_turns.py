"""The reference script (tests/scripts/reference.py) run by its own main(), each Value class
in turn in fresh processes: a step of the swapped script against a step with its own class,
as a user running `python reference.py NAMES` sees it.

    pytest bench/bench_script_turns.py --benchmark-only -s

Each round runs the script once per class (`main([script, NAMES, 1000, STEPS])` in a fresh
interpreter), the classes taking turns, so a change in the machine's load falls on every
class alike. A step is timed as main() runs it: from one train_step's start to the next's.
That takes in the step's forward, backward and Adam loop, main()'s print of the loss, and
the freeing of the last step's graph when its loss is replaced; the last step is run
untimed (after it main() frees the whole run). Each run gives the median of its timed
steps from WARMUP on (every class trains on the same documents). The summary gives pure
over each class two ways: the ratio of the medians over the ROUNDS runs, and the median
of the rounds' own ratios (each round's runs sat next to each other), with their range.
numbers-c and no-op-c (swapped_script.py) are the floors: what a C Value that keeps no
graph, or does nothing, costs the same script; where they cannot be built, they are left
out and pure and compiled still run.

bench_reference_script.py times train_step in one process with pytest-benchmark, with the
loss dropped at once and kept; this file runs the script as it is, so it has one reading.
"""
import json
import statistics
import subprocess
import sys

import pytest

from microgpt import available_engines
from conftest import benchmarks_disabled
from support import PACKAGE_PARENT, load_golden, printed_losses
from swapped_script import C_VALUES, NUM_STEPS, build_c_value, script_env, write_script

WARMUP = 2  # steps run before the timed ones (the compiled arena's first growth)
ROUNDS, TIMED = 5, 40  # with --benchmark-only; a pass with --benchmark-disable runs 1 round, 2 timed steps
FLOORS = list(C_VALUES)  # numbers-c, no-op-c

# The child: the script imported as a module, its train_step wrapped to note each step's
# start, its main() run; then one line of JSON: the module its Value comes from, and the
# seconds from each step's start to the next's.
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
print(json.dumps({"value": script.Value.__module__, "times": [b - a for a, b in zip(starts, starts[1:])]}))
"""

# The module each class's Value comes from, as the child sees it.
VALUE_MODULES = {"pure": "reference_script", "compiled": "microgpt._engine", **C_VALUES}


def run_by_main(script, names_txt, steps, pythonpath):
    """One fresh run of the script's main() for `steps` steps: (the module of the Value it
    ran, the seconds of each step but the last, the losses it printed)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(script), str(names_txt), str(NUM_STEPS), str(steps)],
                          capture_output=True, text=True, timeout=600, env=script_env(pythonpath),
                          cwd=PACKAGE_PARENT)
    assert proc.returncode == 0 and proc.stdout, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    return result["value"], result["times"], printed_losses(proc.stdout.splitlines())


class ScriptRun:
    """One class's script, run by run_by_main; calling it runs it once and returns the
    median of its timed steps, after checking the run."""

    def __init__(self, variant, script, pythonpath, names_txt, steps, golden):
        self.variant, self.script, self.pythonpath = variant, script, pythonpath
        self.names_txt, self.steps, self.golden = names_txt, steps, golden

    def __call__(self):
        value, times, losses = run_by_main(self.script, self.names_txt, self.steps, self.pythonpath)
        assert value == VALUE_MODULES[self.variant]  # the class meant, not another engine's
        assert len(times) == self.steps - 1
        if self.variant in ("pure", "compiled"):  # the same run: the reference's losses, ==
            assert losses == self.golden
        return statistics.median(times[WARMUP:])


def take_turns(runs, rounds):
    """Each of runs (variant -> callable) called once a round, the variants in turn: what
    each call returned, per variant, in round order."""
    results = {v: [] for v in runs}
    for _ in range(rounds):
        for v, run in runs.items():
            results[v].append(run())
    return results


def summary(medians):
    """From each variant's per-run medians: the median over its runs, and for each variant
    but pure, (pure's median over its median, the median of the rounds' own ratios, their
    lowest, their highest)."""
    over_runs = {v: statistics.median(ms) for v, ms in medians.items()}
    ratios = {}
    for v, ms in medians.items():
        if v != "pure":
            per_round = [p / m for p, m in zip(medians["pure"], ms)]
            ratios[v] = (over_runs["pure"] / over_runs[v], statistics.median(per_round),
                         min(per_round), max(per_round))
    return over_runs, ratios


@pytest.mark.skipif("compiled" not in available_engines(), reason="the compiled engine is not built here")
def test_script_steps_taking_turns(benchmark, names_txt, tmp_path, request):
    """A step of the script as its main() runs it, per class, the classes in turn."""
    quick = benchmarks_disabled(request.config)
    rounds, timed = (1, 2) if quick else (ROUNDS, TIMED)
    steps = WARMUP + timed + 1  # the last runs untimed
    golden = load_golden("names_default_1000_steps.json")["losses"][:steps]
    runs, left_out = {}, {}
    for v in ["pure", "compiled"] + ([] if quick else FLOORS):  # the floors' builds only for the figure
        try:
            pythonpath = build_c_value(tmp_path, v) if v in C_VALUES else None
        except pytest.skip.Exception as e:  # no Cython or no compiler: that floor only
            left_out[v] = str(e)
            continue
        runs[v] = ScriptRun(v, write_script(tmp_path, v), pythonpath, names_txt, steps, golden)
    results = {}

    def measure():
        results["medians"] = take_turns(runs, rounds)

    benchmark.group = "reference script, run by its main()"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    over_runs, ratios = summary(results["medians"])
    benchmark.extra_info.update(engine="compiled", rounds=rounds, steps=f"{WARMUP}..{WARMUP + timed - 1}",
                                step_seconds=over_runs, runs=results["medians"],
                                turns={v: list(r) for v, r in ratios.items()}, left_out=left_out)

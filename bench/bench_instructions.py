"""Instructions per step of the reference script (tests/scripts/reference.py) with its Value
swapped for the compiled one, against the same script with a Value that does nothing,
written in Cython (no-op-c, bench/do_nothing_value.pyx): what the compiled Value costs
over the least any Value implemented in C could cost on this script.

    pytest bench/bench_instructions.py --benchmark-only -s

Counted by valgrind's callgrind, which, unlike a clock, does not move with the machine's
load. Each class runs the script as a user runs it (`python script NAMES 1000 STEPS`, a
fresh interpreter, PYTHONHASHSEED fixed) twice, for FIRST and for FIRST + STEPS steps; the
difference over STEPS is a step of documents FIRST..FIRST + STEPS - 1 with the interpreter's
start, the imports and the weights' creation cancelled out. Two windows: 5 steps (run
everywhere), and 20 steps (with --benchmark-only: a reclaim comes every few steps, so the
longer window gives its cost per step as a long run pays it). Skipped where valgrind is
missing. The summary prints the counts and their ratio.
"""
import re
import shutil
import subprocess
import sys

import pytest

from microgpt import available_engines
from conftest import benchmarks_disabled
from support import PACKAGE_PARENT, load_golden, printed_losses
from swapped_script import C_VALUES, NUM_STEPS, build_c_value, script_env, write_script

FIRST = 3
WINDOWS = [5, 20]  # steps counted after the first FIRST
COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(script, steps, names_txt, pythonpath):
    """Instructions callgrind counts for the script's first `steps` steps, and its stdout."""
    env = script_env(pythonpath, PYTHONHASHSEED="0")
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           sys.executable, str(script), str(names_txt), str(NUM_STEPS), str(steps)],
                          capture_output=True, text=True, timeout=1200, env=env, cwd=PACKAGE_PARENT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(COLLECTED.findall(proc.stderr)[-1]), proc.stdout


@pytest.fixture
def per_step(names_txt, tmp_path):
    """per_step(variant, steps) -> (instructions per step, the longer run's stdout)."""

    def count(variant, steps):
        pythonpath = build_c_value(tmp_path, variant) if variant in C_VALUES else tmp_path
        script = write_script(tmp_path, variant)
        short, _ = instructions(script, FIRST, names_txt, pythonpath)
        long, out = instructions(script, FIRST + steps, names_txt, pythonpath)
        return (long - short) / steps, out

    return count


@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed: the instruction counts need its callgrind tool")
@pytest.mark.skipif("compiled" not in available_engines(), reason="the compiled engine is not built here")
@pytest.mark.parametrize("steps", WINDOWS, ids=[f"{n}-steps" for n in WINDOWS])
def test_instructions_per_step(benchmark, per_step, steps, request):
    """Per step: the compiled Value, the do-nothing C Value, and their ratio."""
    if steps > WINDOWS[0] and benchmarks_disabled(request.config):
        pytest.skip("the 20-step window runs with --benchmark-only (a minute more under callgrind)")
    results = {}

    def measure():
        results["compiled"], results["out"] = per_step("compiled", steps)
        results["no-op-c"], _ = per_step("no-op-c", steps)

    benchmark.group = "reference-script instructions"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    assert printed_losses(results["out"].splitlines()) == load_golden("names_default_1000_steps.json")["losses"][:FIRST + steps]
    compiled, floor = results["compiled"], results["no-op-c"]
    assert 0 < floor < compiled
    benchmark.extra_info.update(engine="compiled", instructions_per_step=compiled,
                                floor_instructions_per_step=floor, ratio=compiled / floor,
                                steps=f"{FIRST}..{FIRST + steps - 1}")

"""The reference program as one user script (tests/scripts/reference.py), a training step
with its own pure-Python Value against the same script with `from microgpt import Value`.

    pytest bench/bench_reference_script.py --benchmark-only

Both run the same steps of the run (WARMUP untimed, then ROUNDS timed; step k trains on
document k), so the
medians compare like with like; the summary prints the pure/compiled ratio. A third
variant, a Value that does nothing, measures what the script's own Python costs. The script
runs as a user runs it: no graph() scope, Python's garbage collector on, the swapped
script's memory reclaimed by the arena as it fills.
"""
import importlib.util
from pathlib import Path

import pytest

import microgpt
from microgpt import available_engines

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "scripts" / "reference.py"
BEGIN, END = "# --- the Value class: begin ---", "# --- the Value class: end ---"
NUM_STEPS = 1000
ROUNDS = 10
WARMUP = 2
_losses = {}


# The floor: a Value whose every operation does nothing (returns itself). What a step
# costs with it is the script's own Python (generators, zips, its Adam loop), which
# every Value class pays; pure time over this is the most any Value could gain.
NO_OP_VALUE = """class Value:
    __slots__ = ("data", "grad")

    def __init__(self, data, children=(), local_grads=()):
        self.data, self.grad = data, 0

    def __add__(self, other):
        return self

    __radd__ = __mul__ = __rmul__ = __sub__ = __rsub__ = __truediv__ = __rtruediv__ = __add__
    __pow__ = __add__

    def __neg__(self):
        return self

    log = exp = relu = __neg__

    def backward(self):
        pass
"""


def load_script(tmp_path, variant):
    """The script as a module: as it is (pure), with its Value class swapped for the
    drop-in import (compiled), or for the do-nothing class (no-op)."""
    path = SCRIPT
    if variant != "pure":
        head, rest = SCRIPT.read_text(encoding="utf-8").split(BEGIN)
        swap = "from microgpt import Value" if variant == "compiled" else NO_OP_VALUE
        path = tmp_path / f"reference_{variant}.py"
        path.write_text(head + swap + rest.split(END)[1], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"reference_script_{variant.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANTS = ["pure", "no-op"] + (["compiled"] if "compiled" in available_engines() else [])


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_script_step(benchmark, variant, names_txt, tmp_path):
    """One training step of the script: forward over a document, backward, its own Adam loop."""
    if variant == "compiled" and microgpt.Value.__module__ != "microgpt._engine":
        pytest.skip("from microgpt import Value is not the compiled Value here ($MICROGPT_ENGINE)")
    script = load_script(tmp_path, variant)
    run = script.Run(str(names_txt))
    steps = iter(range(NUM_STEPS))
    losses = []

    def one_step():
        losses.append(script.train_step(run, next(steps), NUM_STEPS).data)

    benchmark.group = "reference-script step"
    benchmark.extra_info.update(engine=variant, steps=ROUNDS)
    # two steps first, untimed, on every variant alike (the compiled arena's first growth)
    benchmark.pedantic(one_step, rounds=1 if benchmark.disabled else ROUNDS, iterations=1,
                       warmup_rounds=0 if benchmark.disabled else WARMUP)
    _losses[variant] = losses
    if "pure" in _losses and "compiled" in _losses:  # the two ran the same steps: the same floats
        assert _losses["pure"] == _losses["compiled"]

"""The reference program as one user script (tests/scripts/reference.py), a training step
with its own pure-Python Value against the same script with `from microgpt import Value`.

    pytest bench/bench_reference_script.py --benchmark-only

Both run the same steps of the run (WARMUP untimed, then ROUNDS timed; step k trains on
document k), so the
medians compare like with like; the summary prints the pure/compiled ratio. Two more
variants measure what the script itself costs, whatever Value it runs: a Value that does
nothing written in Python (no-op), and the same written in Cython (no-op-c, built here with
pyximport; skipped where Cython or a C compiler is missing). pure over no-op-c is the most
that any Value class implemented in C could gain on this script. The script runs as a user
runs it: no graph() scope, Python's garbage collector on, the swapped script's memory
reclaimed by the arena as it fills.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

import microgpt
from microgpt import available_engines

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "tests" / "scripts" / "reference.py"
BEGIN, END = "# --- the Value class: begin ---", "# --- the Value class: end ---"
NUM_STEPS = 1000
ROUNDS = 10
WARMUP = 2
_losses = {}


# A Value whose every operation does nothing (returns itself), written in Python. A step
# with it costs the script's own Python (generators, zips, its Adam loop) plus a Python
# method call per operation; bench/do_nothing_value.pyx is the same class in C (no-op-c),
# whose step is the floor for a Value implemented in C.
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


def build_do_nothing_c(tmp_path):
    """bench/do_nothing_value.pyx compiled into tmp_path; skips without Cython or a compiler."""
    try:
        import pyximport
    except ImportError:
        pytest.skip("no-op-c needs Cython (pip install cython)")
    importer = pyximport.install(build_dir=str(tmp_path / "pyxbuild"), language_level=3, inplace=False)
    sys.path.insert(0, str(HERE))
    try:
        import do_nothing_value  # noqa: F401 (the swapped script imports it by name)
    except Exception as e:  # no C compiler, or the build failed
        pytest.skip(f"no-op-c could not be built: {type(e).__name__}: {e}")
    finally:
        sys.path.remove(str(HERE))
        pyximport.uninstall(*importer)


SWAPS = {"compiled": "from microgpt import Value", "no-op": NO_OP_VALUE,
         "no-op-c": "from do_nothing_value import Value"}


def load_script(tmp_path, variant):
    """The script as a module: as it is (pure), with its Value class swapped for the
    drop-in import (compiled), or for a do-nothing class (no-op, no-op-c)."""
    path = SCRIPT
    if variant == "no-op-c":
        build_do_nothing_c(tmp_path)
    if variant != "pure":
        head, rest = SCRIPT.read_text(encoding="utf-8").split(BEGIN)
        swap = SWAPS[variant]
        path = tmp_path / f"reference_{variant}.py"
        path.write_text(head + swap + rest.split(END)[1], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"reference_script_{variant.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANTS = ["pure", "no-op", "no-op-c"] + (["compiled"] if "compiled" in available_engines() else [])


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

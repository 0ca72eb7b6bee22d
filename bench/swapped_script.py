"""The reference script (tests/scripts/reference.py) with its Value class swapped, for the
benchmarks that run it (bench_reference_script.py, bench_instructions.py): the drop-in
import (compiled), a Value that does nothing, written in Python (no-op) or in Cython
(no-op-c, bench/do_nothing_value.pyx), or a Value in Cython that computes the forward's
numbers and keeps no graph (numbers-c, bench/numbers_only_value.pyx); the Cython ones
built here with pyximport.
"""
import importlib
import os
import sys
from pathlib import Path

import pytest
from support import child_env

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "tests" / "scripts" / "reference.py"
NUM_STEPS = 1000  # the script's learning-rate schedule, as long as the golden run's
BEGIN, END = "# --- the Value class: begin ---", "# --- the Value class: end ---"


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


# the Values written in Cython, by variant: the module the swapped script imports
C_VALUES = {"no-op-c": "do_nothing_value", "numbers-c": "numbers_only_value"}


def build_c_value(tmp_path, variant):
    """The variant's bench/<module>.pyx (C_VALUES) compiled into tmp_path; skips without
    Cython or a compiler. Returns the directory of the built module (for a child
    process's PYTHONPATH)."""
    try:
        import pyximport
    except ImportError:
        pytest.skip(f"{variant} needs Cython (pip install cython)")
    importer = pyximport.install(build_dir=str(tmp_path / "pyxbuild"), language_level=3, inplace=False)
    sys.path.insert(0, str(HERE))
    try:
        module = importlib.import_module(C_VALUES[variant])  # the swapped script imports it by name
    except Exception as e:  # no C compiler, or the build failed
        pytest.skip(f"{variant} could not be built: {type(e).__name__}: {e}")
    finally:
        sys.path.remove(str(HERE))
        pyximport.uninstall(*importer)
    return Path(module.__file__).parent


SWAPS = {"compiled": "from microgpt import Value", "no-op": NO_OP_VALUE,
         **{variant: f"from {module} import Value" for variant, module in C_VALUES.items()}}


def write_script(tmp_path, variant):
    """The script's path: as it is (pure), or a copy in tmp_path with its Value class
    swapped for the drop-in import (compiled) or for one of the classes above."""
    if variant == "pure":
        return SCRIPT
    head, rest = SCRIPT.read_text(encoding="utf-8").split(BEGIN)
    path = tmp_path / f"reference_{variant}.py"
    path.write_text(head + SWAPS[variant] + rest.split(END)[1], encoding="utf-8")
    return path


def script_env(pythonpath=None, **overrides):
    """The environment of a child that runs a swapped script: the test's (child_env), the
    directory of a built class first on PYTHONPATH where there is one, and no
    $MICROGPT_ENGINE, so that `from microgpt import Value` is the compiled Value."""
    env = child_env(**overrides)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env["PYTHONPATH"]])
    env.pop("MICROGPT_ENGINE", None)
    return env

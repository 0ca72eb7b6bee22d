"""The reference program as one user script (tests/scripts/reference.py), a training step
with its own pure-Python Value against the same script with `from microgpt import Value`.

    pytest bench/bench_reference_script.py --benchmark-only

Both run the same first ROUNDS steps of the run (step k trains on document k), so the
medians compare like with like; the summary prints the pure/compiled ratio. The script
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
_losses = {}


def load_script(tmp_path, swap):
    """The script as a module: as it is, or with its Value class swapped for the drop-in."""
    path = SCRIPT
    if swap:
        head, rest = SCRIPT.read_text(encoding="utf-8").split(BEGIN)
        path = tmp_path / "reference_swapped.py"
        path.write_text(head + "from microgpt import Value" + rest.split(END)[1], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"reference_script_{'swapped' if swap else 'own'}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANTS = ["pure"] + (["compiled"] if "compiled" in available_engines() else [])


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_script_step(benchmark, variant, names_txt, tmp_path):
    """One training step of the script: forward over a document, backward, its own Adam loop."""
    if variant == "compiled" and microgpt.Value.__module__ != "microgpt._engine":
        pytest.skip("from microgpt import Value is not the compiled Value here ($MICROGPT_ENGINE)")
    script = load_script(tmp_path, swap=variant == "compiled")
    run = script.Run(str(names_txt))
    steps = iter(range(NUM_STEPS))
    losses = []

    def one_step():
        losses.append(script.train_step(run, next(steps), NUM_STEPS).data)

    benchmark.group = "reference-script step"
    benchmark.extra_info.update(engine=variant, steps=ROUNDS)
    benchmark.pedantic(one_step, rounds=1 if benchmark.disabled else ROUNDS, iterations=1)
    _losses[variant] = losses
    if len(_losses) == 2:  # the two ran the same steps: the same floats
        assert _losses["pure"] == _losses["compiled"]

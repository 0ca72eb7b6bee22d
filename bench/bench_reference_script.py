"""The reference program as one user script (tests/scripts/reference.py), a training step
with its own pure-Python Value against the same script with `from microgpt import Value`.

    pytest bench/bench_reference_script.py --benchmark-only

Both run the same steps of the run (WARMUP untimed, then ROUNDS timed; step k trains on
document k), so the
medians compare like with like; the summary prints the pure/compiled ratio. Two more
variants measure what the script itself costs, whatever Value it runs: a Value that does
nothing written in Python (no-op), and the same written in Cython (no-op-c, built here with
pyximport; skipped where Cython or a C compiler is missing). pure over no-op-c is the most
that any Value class implemented in C could gain on this script. A fifth, numbers-c, is a Value
in Cython that computes the forward's numbers (a new Value per operation) and keeps no graph,
its .grad a fixed float: pure over numbers-c is the most a C Value could gain that does the
forward's and Adam's arithmetic but no backward. The script runs as a user
runs it: no graph() scope, Python's garbage collector on, the swapped script's memory
reclaimed by the arena as it fills. Each variant runs twice (LOSS): the step's loss dropped
as it returns, and kept until the next step's replaces it, as the script's main() keeps it.
"""
import importlib.util

import pytest

import microgpt
from microgpt import available_engines
from support import load_golden
from swapped_script import C_VALUES, NUM_STEPS, build_c_value, write_script

ROUNDS = 10
WARMUP = 2
_losses = {}


def load_script(tmp_path, variant):
    """The script as a module: as it is (pure), or swapped (swapped_script.py)."""
    if variant in C_VALUES:
        build_c_value(tmp_path, variant)
    path = write_script(tmp_path, variant)
    spec = importlib.util.spec_from_file_location(f"reference_script_{variant.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANTS = ["pure", "no-op", "no-op-c", "numbers-c"] + (["compiled"] if "compiled" in available_engines() else [])


# How the step's loss is held: dropped as the step returns (the graph goes at once, its rows
# are reused by the next step), or kept until the next step's replaces it, as the script's
# own main() keeps it (the step builds its graph beside the last one and frees that one at
# its end: pure Python's collector then walks two graphs, and the compiled arena appends
# above the kept graph and reclaims when it fills).
LOSS = {"dropped": "reference-script step", "kept": "reference-script step, loss kept (as its main)"}


@pytest.mark.parametrize("loss", list(LOSS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_script_step(benchmark, variant, loss, names_txt, tmp_path):
    """One training step of the script: forward over a document, backward, its own Adam loop."""
    if variant == "compiled" and microgpt.Value.__module__ != "microgpt._engine":
        pytest.skip("from microgpt import Value is not the compiled Value here ($MICROGPT_ENGINE)")
    script = load_script(tmp_path, variant)
    run = script.Run(str(names_txt))
    steps = iter(range(NUM_STEPS))
    losses = []
    held = [None]  # the loss kept (LOSS "kept"), as main()'s `loss = train_step(...)`

    def one_step():
        step_loss = script.train_step(run, next(steps), NUM_STEPS)
        losses.append(step_loss.data)
        if loss == "kept":
            held[0] = step_loss  # the last step's loss goes here, as main()'s does

    benchmark.group = LOSS[loss]
    benchmark.extra_info.update(engine=variant, steps=ROUNDS, loss=loss)
    # two steps first, untimed, on every variant alike (the compiled arena's first growth)
    benchmark.pedantic(one_step, rounds=1 if benchmark.disabled else ROUNDS, iterations=1,
                       warmup_rounds=0 if benchmark.disabled else WARMUP)
    _losses[variant, loss] = losses
    if variant == "numbers-c":  # its first step is the reference's forward: the golden first loss
        assert losses[0] == load_golden("names_default_1000_steps.json")["losses"][0]
    if ("pure", loss) in _losses and ("compiled", loss) in _losses:  # the same steps: the same floats
        assert _losses["pure", loss] == _losses["compiled", loss]

"""A micrograd-style MLP script (tests/scripts/mlp.py: neurons, layers, zero_grad, SGD),
trained 100 steps with no graph() scope: its own Value class against the drop-in import.

The same losses and accuracies with ==, and memory that stays where it was at step 10:
the arena reclaims each step's graph once nothing holds it.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from microgpt import available_engines
from support import PACKAGE_PARENT, child_env

SCRIPT = Path(__file__).resolve().parent / "scripts" / "mlp.py"
BEGIN, END = "# --- the Value class: begin ---", "# --- the Value class: end ---"
STEPS = 100
HAS_COMPILED = "compiled" in available_engines()


def swapped_script(tmp_path):
    head, rest = SCRIPT.read_text(encoding="utf-8").split(BEGIN)
    own_class, tail = rest.split(END)
    assert "class Value" in own_class
    path = tmp_path / "mlp_swapped.py"
    path.write_text(head + "from microgpt import Value" + tail, encoding="utf-8")
    return path


def run(code, engine=None):
    env = child_env()
    env.pop("MICROGPT_ENGINE", None)
    if engine is not None:
        env["MICROGPT_ENGINE"] = engine
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=PACKAGE_PARENT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_the_mlp_gives_the_same_numbers_after_the_swap(tmp_path):
    own = run(f"import runpy, sys; sys.argv = [{str(SCRIPT)!r}, '{STEPS}']; "
              f"runpy.run_path(sys.argv[0], run_name='__main__')")
    assert len(own) == STEPS and own[-1].startswith(f"step {STEPS} loss ")
    engines = ["pure"] + (["compiled", "replay"] if HAS_COMPILED else [])
    for engine in engines:
        out = run(f"""
            import runpy
            script = runpy.run_path({str(swapped_script(tmp_path))!r})
            script["train"]({STEPS}, lambda k, total, accuracy:
                            print(f"step {{k}} loss {{total.data!r}} accuracy {{accuracy!r}}"))
        """, engine)
        assert out == own, engine  # every loss and accuracy, to the last bit of its repr


@pytest.mark.skipif(not HAS_COMPILED, reason="the compiled engine is not built here")
def test_the_mlp_trained_without_a_scope_keeps_its_memory_flat(tmp_path):
    lines = run(f"""
        import runpy
        from microgpt._engine import Value, default_arena
        import microgpt
        assert microgpt.Value is Value
        script = runpy.run_path({str(swapped_script(tmp_path))!r})
        arena = default_arena()

        def vm_rss_kib():
            with open("/proc/self/status") as f:
                return [int(line.split()[1]) for line in f if line.startswith("VmRSS:")][0]

        def report(k, total, accuracy):
            print(k, arena.nbytes, len(arena), arena.reclaimed, vm_rss_kib())

        script["train"]({STEPS}, report)
    """, "compiled")
    rows = {int(f[0]): [int(x) for x in f[1:]] for f in (line.split() for line in lines)}
    (b10, n10, r10, rss10), (b100, n100, r100, rss100) = rows[10], rows[STEPS]
    assert b100 <= 1.1 * b10  # the arena's columns: what it holds does not grow with the steps
    assert rss100 <= 1.1 * rss10  # nor the process
    made = n100 + r100  # every node ever made, most of them reclaimed
    assert made > 10 * max(n100, n10)

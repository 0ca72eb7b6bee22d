"""The reference program as a user has it: one script with its own Value class
(tests/scripts/reference.py, written from the algorithm), run as it is and with
that class swapped for `from microgpt import Value`, nothing else changed.

The swapped script must print the golden losses and samples with ==, in bounded
memory (no graph() scope anywhere in it: the arena reclaims what it drops).
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from microgpt import available_engines
from support import PACKAGE_PARENT, child_env, load_golden, printed_losses

SCRIPT = Path(__file__).resolve().parent / "scripts" / "reference.py"
BEGIN, END = "# --- the Value class: begin ---", "# --- the Value class: end ---"
DROP_IN = "from microgpt import Value"
MAX_PEAK_RSS_MIB = 100
HAS_COMPILED = "compiled" in available_engines()


def swapped_script(tmp_path):
    """The script with its Value class (the lines between the markers) replaced by the
    drop-in import, and every other byte as it was."""
    text = SCRIPT.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    head, rest = text.split(BEGIN)
    own_class, tail = rest.split(END)
    assert "class Value" in own_class
    assert not [line for line in (head + tail).splitlines() if line.startswith(("import ", "from ")) and "microgpt" in line]
    path = tmp_path / "reference_swapped.py"
    path.write_text(head + DROP_IN + tail, encoding="utf-8")
    return path


def run_script(path, args, engine=None):
    """Run a script in a fresh interpreter; returns (stdout lines, peak RSS in MiB)."""
    # VmHWM is this process's own peak (getrusage's ru_maxrss also counts the parent's
    # pages the child shared before exec: pytest's, hundreds of MiB late in a run)
    wrapper = textwrap.dedent(f"""
        import resource, runpy, sys
        sys.argv = {[str(path)] + [str(a) for a in args]!r}
        runpy.run_path(sys.argv[0], run_name="__main__")
        try:
            with open("/proc/self/status") as f:
                peak = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")][0]
        except OSError:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("peak_rss_kib", peak, file=sys.stderr)
    """)
    env = child_env()
    env.pop("MICROGPT_ENGINE", None)
    if engine is not None:
        env["MICROGPT_ENGINE"] = engine
    proc = subprocess.run([sys.executable, "-c", wrapper], env=env, capture_output=True, text=True,
                          timeout=600, cwd=PACKAGE_PARENT)
    assert proc.returncode == 0, proc.stderr
    rss = [line for line in proc.stderr.splitlines() if line.startswith("peak_rss_kib ")]
    return proc.stdout.splitlines(), int(rss[-1].split()[1]) / 1024


def samples_of(lines):
    return [line.split(": ", 1)[1] for line in lines if line.startswith("sample ")]


def test_the_script_with_its_own_value_is_the_reference(names_txt):
    """The script is the specification: its own class gives the golden run's first steps."""
    golden = load_golden("names_default_1000_steps.json")
    lines, _ = run_script(SCRIPT, [names_txt, golden["num_steps"], 3])
    assert printed_losses(lines) == golden["losses"][:3]
    assert [line.split()[1] for line in lines] == ["1", "2", "3"]


def test_the_swap_on_the_pure_engine(names_txt, tmp_path):
    golden = load_golden("names_default_1000_steps.json")
    lines, _ = run_script(swapped_script(tmp_path), [names_txt, golden["num_steps"], 3], engine="pure")
    assert printed_losses(lines) == golden["losses"][:3]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_COMPILED, reason="the compiled engine is not built here")
def test_the_swapped_script_trains_1000_steps_to_the_golden_run(names_txt, tmp_path):
    """Acceptance: 1000 steps and 20 samples, ==, on the engine auto picks, peak RSS bounded
    (the script never opens a graph scope; without reclaiming it would hold ~3.9 GB)."""
    golden = load_golden("names_default_1000_steps.json")
    lines, peak_mib = run_script(swapped_script(tmp_path), [names_txt])
    assert printed_losses(lines) == golden["losses"]
    assert samples_of(lines) == golden["samples"]
    assert len(lines) == golden["num_steps"] + golden["num_samples"]
    assert peak_mib <= MAX_PEAK_RSS_MIB

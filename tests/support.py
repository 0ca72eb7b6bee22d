"""What the test files share: the data they read, float comparison, a small model
trained in-process, and running `microgpt` in-process or as a child process.

(pyproject.toml puts tests/ on sys.path, and bench/pytest.ini does the same for
the benchmarks, so both import this as `support`.)
"""
import hashlib
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import microgpt
from microgpt import get_engine
from microgpt.cli import main
from microgpt.data import NAMES_SHA256, Tokenizer, names_path
from microgpt.model import Config, init_state_dict
from microgpt.train import Trainer

TESTS = Path(__file__).resolve().parent
GOLDEN_DIR = TESTS / "golden"
# beside the project, a developer's checkout may hold the shared data folder
SHARED_NAMES_TXT = TESTS.parent.parent / "shared" / "data" / "names.txt"
PURE_ONLY_VAR = "MICROGPT_ALLOW_PURE_ONLY"


# ---------------------------------------------------------------- data

def load_golden(name):
    """A golden file of tests/golden/: figures the reference program produced."""
    with open(GOLDEN_DIR / name, encoding="utf-8") as f:
        return json.load(f)


def printed_losses(lines):
    """The losses a reference script's main() printed (`step K loss REPR`), as floats."""
    return [float(line.split()[-1]) for line in lines if line.startswith("step ")]


def find_names_txt():
    """The names data set for the tests: $MICROGPT_NAMES_TXT, else the shared data folder
    beside the project, else the user's cache (where `microgpt train` downloads it).
    Returns (path, None), or (None, one line saying what is wrong and what to do)."""
    candidates = []
    if os.environ.get("MICROGPT_NAMES_TXT"):
        candidates.append(Path(os.environ["MICROGPT_NAMES_TXT"]).expanduser())
    else:
        candidates += [SHARED_NAMES_TXT, Path(names_path())]
    for path in candidates:
        if path.is_file():
            if hashlib.sha256(path.read_bytes()).hexdigest() != NAMES_SHA256:
                return None, (f"{path} is not the names data set (its SHA-256 is not {NAMES_SHA256[:16]}...): "
                              f"set MICROGPT_NAMES_TXT to the right file")
            return path, None
    return None, (f"the names data set is not found (looked at {', '.join(map(str, candidates))}): "
                  f"run `microgpt train` once to download it into the cache, or set MICROGPT_NAMES_TXT")


def compiled_engine_problem():
    """One line if the package was imported from a source tree whose extension is not built
    (every compiled-engine test would be skipped), else None. MICROGPT_ALLOW_PURE_ONLY=1
    accepts a pure-only run."""
    package = Path(microgpt.__file__).resolve().parent
    if not (package / "_engine.pyx").exists() or os.environ.get(PURE_ONLY_VAR) == "1":
        return None
    if not microgpt.engine.compiled_available():
        return (f"the compiled engine is not built in {package}: run pip install -e . "
                f"(or set {PURE_ONLY_VAR}=1 to test the pure engine only)")
    from microgpt import _engine
    if Path(_engine.__file__).resolve().parent != package:
        return (f"the compiled engine was imported from {Path(_engine.__file__).parent}, not from the "
                f"package under test in {package}: run pip install -e . here")
    return None


def session_names_txt():
    """For a conftest's pytest_configure: the names data set's path, or stop the whole
    session with one line where the tests cannot mean anything: a source tree whose
    extension is not built (every compiled-engine test would be skipped in silence), or
    no names data set (every test reads it through the cache)."""
    import pytest
    path, problem = find_names_txt()
    problem = compiled_engine_problem() or problem
    if problem:
        raise pytest.UsageError(problem)
    return path


def write_docs(path, docs):
    """A text file of documents, one per line; returns its path."""
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


def edit_checkpoint(run_dir, change, reseal=True):
    """Apply change(obj) to the JSON object in run_dir/checkpoint.json, in place; returns its path.

    reseal: give the edited file a content checksum that matches it, as if microgpt had
    written it, so that the loader's checks of the fields are what meets the edit (and
    not the checksum, which refuses any edit before a field is read)."""
    path = Path(run_dir) / "checkpoint.json"
    obj = json.loads(path.read_text(encoding="utf-8"))
    change(obj)
    path.write_text(json.dumps(obj), encoding="utf-8")
    if reseal:
        reseal_checkpoint(path)
    return path


def reseal_checkpoint(path):
    """Give the checkpoint file at path the content checksum of what it now holds, keeping
    every other byte (a file that is not a JSON object is left as it is)."""
    from microgpt.checkpoint import CHECKSUM_KEY, content_sha256
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return
    if not isinstance(obj, dict):
        return
    digest = content_sha256(obj)
    if CHECKSUM_KEY in obj:  # the checksum is a 64-digit hex string: replace it in place
        import re
        text = re.sub(f'"{CHECKSUM_KEY}": *"[0-9a-f]*"', f'"{CHECKSUM_KEY}": "{digest}"', text)
    else:
        text = text.rstrip().rstrip("}") + f', "{CHECKSUM_KEY}": "{digest}"}}'
    path.write_text(text, encoding="utf-8")


def same_float(x, y):
    """== that also tells 0.0 from -0.0 and calls nan equal to nan."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1, x) == math.copysign(1, y)


# ---------------------------------------------------------------- a small model, trained in-process

TEN_NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"]
SMALL = dict(n_embd=8, n_head=2, block_size=8)  # one layer; every document of TEN_NAMES fits the block


def bits(x):
    """A float's eight bytes: == on them is == on every bit (the sign of a zero too)."""
    return struct.pack("<d", x)


def small_trainer(engine, docs=TEN_NAMES, seed=3, num_steps=20, state=None, **config):
    """A Trainer of the named engine on docs, a SMALL model unless config says otherwise,
    its weights drawn after random.seed(seed); state(sd), where given, hands them over
    rearranged (returning the state dict to train)."""
    eng = get_engine(engine)
    random.seed(seed)
    tok = Tokenizer.from_documents(docs)
    cfg = Config(vocab_size=tok.vocab_size, **{**SMALL, **config})
    sd = init_state_dict(eng.Value, cfg)
    return Trainer(eng, sd if state is None else state(sd), cfg, list(docs), tok, num_steps=num_steps)


def train_bits(engine, steps=6):
    """(losses, weights, trainer): steps of a small_trainer, the floats as bits."""
    t = small_trainer(engine)
    losses = [bits(t.train_step()[1]) for _ in range(steps)]
    return losses, [bits(p.data) for p in t.params], t


# ---------------------------------------------------------------- running microgpt

# Children start in the folder holding the microgpt these tests imported: `python -m`
# puts its working directory first on sys.path, where a source checkout would shadow
# the installed package; PYTHONPATH leads with the same folder.
PACKAGE_PARENT = str(Path(microgpt.__file__).resolve().parent.parent)


def run_main(argv):
    """main(argv) in-process: (status, stdout, stderr).

    A run that a signal stopped leaves the stop signals ignored (main is the program,
    and the program is ending); here the test process goes on, so their handlers are
    put back as they were."""
    from microgpt.signals import StopSignals
    handlers = {signum: signal.getsignal(signum) for signum in StopSignals.SIGNALS}
    out, err = StringIO(), StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            status = main([str(a) for a in argv])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return status, out.getvalue(), err.getvalue()


def child_env(**overrides):
    """This test's environment (the autouse fixture's cache included) for a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def python_child(code, simd=None, timeout=600):
    """`python -c code` as a child process with the kernels' SIMD narrowed to
    simd (None: the processor's own), run to the end; the JSON its last line
    of stdout prints."""
    env = child_env()
    env.pop("MICROGPT_SIMD", None)
    if simd is not None:
        env["MICROGPT_SIMD"] = simd
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE_PARENT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def module_argv(args):
    return [sys.executable, "-m", "microgpt", *map(str, args)]


def run_module(args, timeout=120, **env_overrides):
    """`python -m microgpt ARGS` as a child process, run to the end."""
    return subprocess.run(module_argv(args), capture_output=True, text=True, timeout=timeout,
                          env=child_env(**env_overrides), cwd=PACKAGE_PARENT)


def start_module(args, **env_overrides):
    """`python -m microgpt ARGS` as a child process left running (stdout, stderr piped)."""
    return subprocess.Popen(module_argv(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(**env_overrides), cwd=PACKAGE_PARENT)


def assert_one_error_line(err):
    """stderr holds exactly one line, `microgpt: error: ...`, and no traceback; returns it.
    (Where only the pure engine is built, `auto` first notes that on a line of its own.)"""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("microgpt: note: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("microgpt: error:"), err
    return lines[0]


def refused(argv, status=2):
    """Run the CLI in-process: it ends with `status` and one error line; returns the line."""
    got, out, err = run_main(argv)
    assert got == status, err
    return assert_one_error_line(err)


def other_name_for(path, spelling, tmp_path):
    """The same file (one in tmp_path) under another name: "same" (the path
    itself), "dotdot" (through x/..), "symlink" or "hardlink"."""
    if spelling == "same":
        return path
    if spelling == "dotdot":
        (tmp_path / "x").mkdir(exist_ok=True)
        return tmp_path / "x" / ".." / path.name
    other = tmp_path / f"{spelling}{path.suffix}"
    (os.symlink if spelling == "symlink" else os.link)(path, other)
    return other


# a small text to train on, and flags for a tiny model on the pure engine
SMALL_DOCS = ["anna", "bob", "carla", "david", "eve", "frank", "grace", "heidi", "ivan", "judy",
              "mallory", "oscar", "peggy", "trent", "victor", "walter"]
TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--engine", "pure"]


def sample_lines(out):
    return [line for line in out.splitlines() if line.startswith("sample ")]


def sample_texts(out):
    return [line.split(": ", 1)[1] for line in sample_lines(out)]

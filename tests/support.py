"""What the test files share: running `microgpt` in-process or as a child process.

(pyproject.toml puts tests/ on sys.path, so a test imports this as `support`.)
"""
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import microgpt
from microgpt.cli import main

# Children start in the folder holding the microgpt these tests imported: `python -m`
# puts its working directory first on sys.path, where a source checkout would shadow
# the installed package; PYTHONPATH leads with the same folder.
PACKAGE_PARENT = str(Path(microgpt.__file__).resolve().parent.parent)


def run_main(argv):
    """main(argv) in-process: (status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def child_env(**overrides):
    """This test's environment (the autouse fixture's cache included) for a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_PARENT] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


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
    """stderr holds exactly one line, `microgpt: error: ...`, and no traceback; returns it."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("microgpt: error:"), err
    return lines[0]


def sample_lines(out):
    return [line for line in out.splitlines() if line.startswith("sample ")]


def sample_texts(out):
    return [line.split(": ", 1)[1] for line in sample_lines(out)]

"""The torch engine in several processes (DistributedDataParallel, gloo on loopback).

Two processes with --batch-size 4 train the losses of one process with
--batch-size 4 (within 1e-9); rank 0 alone prints, logs and saves; checkpoints
move between two processes and one; torchrun's own form works too.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import PACKAGE_PARENT, assert_one_error_line, child_env, refused, run_main, run_module

if os.environ.get("MICROGPT_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI: a missing torch fails here, it never skips)
else:
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install '.[torch]')")

from microgpt import rundir  # noqa: E402

DDP_REL = 1e-9
TIMEOUT = 300  # two processes start torch and join a group on loopback: seconds on a busy machine


def read_log(path):
    records = [json.loads(line) for line in open(path, encoding="utf-8")]
    return [r["loss"] for r in records if "loss" in r], records


def env(names_cache):
    return {"MICROGPT_CACHE_DIR": str(names_cache)}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, names_cache):
    """`--nproc-per-node 2 --batch-size 4 --steps 20`, and the same steps in one process."""
    d = tmp_path_factory.mktemp("ddp")
    runs = {}
    for name, extra in (("two", ["--nproc-per-node", 2]), ("one", [])):
        proc = run_module(["train", "--engine", "torch", "--batch-size", 4, "--steps", 20, "-o", d / name,
                           "--log", d / f"{name}.jsonl", "--num-samples", 3, *extra],
                          timeout=TIMEOUT, **env(names_cache))
        assert proc.returncode == 0, proc.stderr
        runs[name] = proc
    return d, runs


@pytest.mark.parametrize("given", [["--nproc-per-node", "2"], ["--nproc-per-node=2"], ["--nproc", "2"],
                                   ["--np=2"]])
def test_the_processes_are_started_without_the_launchers_flag_however_spelled(given):
    from microgpt.distributed import without_flag
    argv = ["train", "--engine", "torch", *given, "--n-embd", "8", "--steps", "3"]
    assert without_flag(argv, "--nproc-per-node") == ["train", "--engine", "torch", "--n-embd", "8", "--steps", "3"]


def test_two_processes_give_one_processs_losses(two_processes):
    d, runs = two_processes
    two, _ = read_log(d / "two.jsonl")
    one, _ = read_log(d / "one.jsonl")
    assert len(two) == len(one) == 20  # one log: rank 0's, one record a step
    assert max(abs(a - b) / b for a, b in zip(two, one)) <= DDP_REL


def test_rank_0_alone_prints_and_saves(two_processes):
    d, runs = two_processes
    out = runs["two"].stdout
    assert out.count("engine: torch") == 1 and "2 processes" in out.splitlines()[0]
    assert out.count("step   20 /   20") == 1
    assert len([line for line in out.splitlines() if line.startswith("sample ")]) == 3
    assert "Traceback" not in runs["two"].stderr
    ckpt = rundir.load(d / "two")
    assert ckpt.step == 20 and ckpt.batch_size == 4
    assert sorted(p.name for p in (d / "two").iterdir()) == ["checkpoint.json"]


def test_a_checkpoint_of_two_processes_resumes_in_one_and_back(two_processes, names_cache, tmp_path):
    d, _ = two_processes
    status, out, err = run_main(["train", "--resume", d / "two", "-o", tmp_path / "one", "--steps", 22,
                                 "--engine", "torch", "--num-samples", 0])
    assert status == 0, err
    proc = run_module(["train", "--resume", tmp_path / "one", "-o", tmp_path / "two", "--steps", 24,
                       "--engine", "torch", "--nproc-per-node", 2, "--num-samples", 0],
                      timeout=TIMEOUT, **env(names_cache))
    assert proc.returncode == 0, proc.stderr
    assert rundir.load(tmp_path / "two").step == 24


def test_torchrun_form_leaves_a_whole_checkpoint(tmp_path, names_cache):
    """The README's torchrun line (torchrun's parser takes --log for its --log-dir: --log-file)."""
    run_dir, log = tmp_path / "run", tmp_path / "log.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "microgpt", "train", "--engine", "torch", "--batch-size", "4", "-o", str(run_dir),
           "--steps", "10", "--log-file", str(log), "--num-samples", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=PACKAGE_PARENT,
                          env=child_env(OMP_NUM_THREADS="1", **env(names_cache)))
    assert proc.returncode == 0, proc.stderr
    assert rundir.load(run_dir).step == 10
    losses, _ = read_log(log)
    assert len(losses) == 10


def start_two_processes_until_step_5(run_dir, names_cache):
    """A long run in two processes (a session of its own), once it has done 5 steps."""
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "train", "--engine", "torch", "--batch-size", "2",
                             "--nproc-per-node", "2", "--steps", "100000", "-o", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=child_env(**env(names_cache)), cwd=PACKAGE_PARENT)
    deadline = time.monotonic() + TIMEOUT
    for line in proc.stdout:
        if line.startswith("step    5 /"):
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("the run did not reach step 5")
    return proc


def test_ctrl_c_saves_once_and_stops_every_process(tmp_path, names_cache):
    run_dir = tmp_path / "run"
    proc = start_two_processes_until_step_5(run_dir, names_cache)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved to" in err, err
    assert rundir.load(run_dir).step >= 5


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_to_the_launcher_saves_and_ends_with_130(signame, tmp_path, names_cache):
    """As in one process (README: 130, whichever the signal)."""
    run_dir = tmp_path / "run"
    proc = start_two_processes_until_step_5(run_dir, names_cache)
    try:
        proc.send_signal(getattr(signal, signame))  # (kill PID: the launcher alone, which passes it on)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.startswith(f"microgpt: {signame} at step ") and len(err.splitlines()) == 1, err
    assert rundir.load(run_dir).step >= 5


@pytest.mark.parametrize("case", ["existing run", "missing resume", "missing input"])
def test_a_refused_setting_is_one_line(case, tmp_path, names_cache):
    run_dir = tmp_path / "run"
    if case == "existing run":
        assert run_main(["train", "--engine", "torch", "--steps", 2, "-o", run_dir, "--num-samples", 0])[0] == 0
    args = {"existing run": ["-o", run_dir], "missing resume": ["--resume", tmp_path / "nope"],
            "missing input": ["-i", tmp_path / "missing.txt"]}[case]
    proc = run_module(["train", "--engine", "torch", "--nproc-per-node", 2, "--batch-size", 2, "--steps", 3, *args],
                      timeout=TIMEOUT, **env(names_cache))
    assert proc.returncode == 2
    line = assert_one_error_line(proc.stderr)
    assert "process" not in line  # rank 0's words, not the group's breaking


def test_divergence_in_two_processes_is_one_line(tmp_path, names_cache):
    run_dir = tmp_path / "div"
    proc = run_module(["train", "--engine", "torch", "--nproc-per-node", 2, "--learning-rate", "1e300",
                       "--steps", 50, "--batch-size", 4, "-o", run_dir, "--num-samples", 0],
                      timeout=TIMEOUT, **env(names_cache))
    assert proc.returncode == 1
    line = assert_one_error_line(proc.stderr)
    assert "diverged" in line and f"is saved to {run_dir}" in line  # (rank 0 saved; the others said nothing)
    assert rundir.load(run_dir).step == 0


def test_batch_must_divide_among_the_processes():
    assert "does not divide evenly" in refused(["train", "--engine", "torch", "--batch-size", 3,
                                                "--nproc-per-node", 2, "--steps", 1])


def test_nproc_per_node_is_refused_on_scalar_engines():
    assert "--engine torch" in refused(["train", "--engine", "replay", "--nproc-per-node", 2, "--steps", 1])

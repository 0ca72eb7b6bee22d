"""Limits of the command line found by probing it: hostile numbers in a plotted log, plot
outputs that would destroy a file, a FIFO for --log, --help that cannot be written, counts
without bound, a stopped benchmark's worker, the line of a Ctrl-C (README, "Limits and
failure behaviour"). Each ends in one line and a stated exit status, nothing lost."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest
from support import (PACKAGE_PARENT, SMALL_DOCS, TINY, assert_one_error_line, child_env, module_argv,
                     other_name_for, refused, run_main, run_module, start_module, write_docs)

from microgpt import rundir
from microgpt.args import MAX_BENCH_REPEAT, MAX_BENCH_STEPS, MAX_SAMPLES, MAX_THREADS, build_parser
from microgpt.errors import UsageError
from microgpt.limits import MAX_BATCH_SIZE

DOCS = SMALL_DOCS
HUGE = 10 ** 20


@pytest.fixture
def docs_txt(tmp_path):
    return write_docs(tmp_path / "v.txt", DOCS)


def write_log(path, records):
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


GOOD = [{"step": 1, "loss": 3.3}, {"step": 2, "loss": 3.1}]


# ---------------------------------------------------------------- 1. plot: hostile numbers

BIG = "9" * 400


@pytest.mark.parametrize("line", [
    '{"step": 3, "loss": %s}\n' % BIG,
    '{"step": 3, "loss": -%s}\n' % BIG,
    '{"step": %s, "loss": 2.0}\n' % BIG,
    '{"step": 3, "loss": 2.0, "val_loss": %s}\n' % BIG,
    '{"step": 3, "val_loss": 1e308}\n',
    '{"step": 3, "loss": 1e308}\n',
    '{"step": 3, "loss": -1e308}\n',
    '{"step": 3, "loss": 1e999}\n',
    '{"step": 3, "loss": NaN}\n',
    '{"step": 3, "loss": -Infinity}\n',
    '{"step": -1, "loss": 2.0}\n',
    '{"step": 2.5, "loss": 2.0}\n',
], ids=["int_loss", "negative_int_loss", "int_step", "int_val_loss", "val_1e308", "loss_1e308",
        "loss_minus_1e308", "loss_1e999", "nan", "minus_infinity", "negative_step", "fractional_step"])
def test_plot_refuses_numbers_out_of_range_naming_file_and_line(tmp_path, line):
    log = write_log(tmp_path / "log.jsonl", GOOD + [line])
    msg = refused(["plot", log, "--out", tmp_path / "x.png"])
    assert f"{log} line 3" in msg
    assert len(msg) < 300  # a 400-digit number is not printed whole
    assert not (tmp_path / "x.png").exists()


def test_plot_draws_the_extremes_it_accepts(tmp_path):
    pytest.importorskip("matplotlib")  # the plot extra
    from microgpt.plot import MAX_LOSS, MAX_STEP
    log = write_log(tmp_path / "log.jsonl", [
        {"step": 0, "loss": MAX_LOSS}, {"step": 1, "loss": -MAX_LOSS}, {"step": 2, "loss": 5e-324},
        {"step": MAX_STEP, "loss": 0, "val_loss": -MAX_LOSS}, {"step": 7, "loss": 1.0, "val_loss": MAX_LOSS}])
    got, out, err = run_main(["plot", log, "--out", tmp_path / "x.png"])
    assert (got, err) == (0, "")
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")


def test_plot_draws_a_many_step_log_of_huge_losses(tmp_path):
    # the moving average sums up to a window of losses: it must stay finite
    pytest.importorskip("matplotlib")  # the plot extra
    from microgpt.plot import MAX_LOSS
    log = write_log(tmp_path / "log.jsonl", [{"step": s, "loss": MAX_LOSS * (-1) ** s} for s in range(1, 501)])
    got, _, err = run_main(["plot", log, "--out", tmp_path / "x.png"])
    assert (got, err) == (0, "")


# ---------------------------------------------------------------- 2, 3. plot --out

@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_plot_out_that_is_the_log_is_refused(tmp_path, spelling):
    log = write_log(tmp_path / "log.png", GOOD)
    before = log.read_bytes()
    out = other_name_for(log, spelling, tmp_path)
    line = refused(["plot", log, "--out", out])
    assert "--out" in line and "log" in line
    assert log.read_bytes() == before


def test_plot_out_that_is_a_fifo_is_refused_and_kept(tmp_path):
    import stat
    log = write_log(tmp_path / "log.jsonl", GOOD)
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(["plot", log, "--out", fifo])
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_plot_out_that_is_a_directory_is_refused(tmp_path):
    log = write_log(tmp_path / "log.jsonl", GOOD)
    (tmp_path / "d.png").mkdir()
    assert "not a regular file" in refused(["plot", log, "--out", tmp_path / "d.png"])
    assert os.listdir(tmp_path / "d.png") == []


def test_plot_out_in_a_missing_folder_is_refused_and_not_created(tmp_path):
    log = write_log(tmp_path / "log.jsonl", GOOD)
    line = refused(["plot", log, "--out", tmp_path / "nowhere" / "deeper" / "x.png"])
    assert "does not exist" in line
    assert not (tmp_path / "nowhere").exists()


def test_plot_replaces_an_image_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")  # the plot extra
    log = write_log(tmp_path / "log.jsonl", GOOD)
    out = tmp_path / "x.png"
    out.write_bytes(b"old image")
    from microgpt import data

    def fail(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.os, "fsync", fail)  # the write fails before the rename
    assert "No space left" in refused(["plot", log, "--out", out])
    assert out.read_bytes() == b"old image"
    assert sorted(os.listdir(tmp_path)) == ["log.jsonl", "x.png"]
    monkeypatch.undo()
    got, _, err = run_main(["plot", log, "--out", out])
    assert got == 0, err
    assert out.read_bytes().startswith(b"\x89PNG")
    assert sorted(os.listdir(tmp_path)) == ["log.jsonl", "x.png"]


# ---------------------------------------------------------------- 4. train --log: a FIFO or a socket

@pytest.mark.parametrize("kind", ["fifo", "socket"])
@pytest.mark.parametrize("out_dir", [False, True], ids=["no_out_dir", "out_dir"])
def test_train_log_that_is_a_fifo_or_socket_is_refused_before_any_work(docs_txt, tmp_path, kind, out_dir):
    # a child process: before the fix, opening the FIFO waited for ever (the timeout fails the test)
    path = tmp_path / "ff"
    sock = None
    if kind == "fifo":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
    try:
        argv = ["train", "-i", docs_txt, *TINY, "--steps", 2, "--num-samples", 0, "--log", path]
        if out_dir:
            argv += ["-o", tmp_path / "D"]
        proc = run_module(argv, timeout=60)
    finally:
        if sock is not None:
            sock.close()
    assert proc.returncode == 2, proc.stderr
    line = assert_one_error_line(proc.stderr)
    assert "--log" in line and ("FIFO" if kind == "fifo" else "socket") in line
    assert proc.stdout == ""  # nothing was built: not even the run's summary
    assert not (tmp_path / "D").exists()


# ---------------------------------------------------------------- 5. --help that cannot be written

@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sample", "--help"], ["bench", "-h"],
                                  ["plot", "--help"]])
def test_help_that_cannot_be_written_is_one_line_and_status_1(argv):
    with open("/dev/full", "w") as full:  # as stdout only, as the other tests use it
        child = subprocess.run(module_argv(argv), stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                               env=child_env(), cwd=PACKAGE_PARENT)
    assert child.returncode == 1
    assert "cannot write output" in assert_one_error_line(child.stderr)


def test_help_still_prints_and_exits_0():
    proc = run_module(["sample", "--help"])
    assert proc.returncode == 0 and proc.stderr == ""
    assert "--num-samples" in proc.stdout and "at most 1,000,000" in " ".join(proc.stdout.split())


# ---------------------------------------------------------------- 6. counts are bounded

@pytest.mark.parametrize("argv,limit", [
    (["train", "--num-samples", MAX_SAMPLES + 1], MAX_SAMPLES),
    (["sample", "-o", "D", "--num-samples", HUGE], MAX_SAMPLES),
    (["bench", "--steps", HUGE], MAX_BENCH_STEPS),
    (["bench", "--warmup", MAX_BENCH_STEPS + 1], MAX_BENCH_STEPS),
    (["bench", "--repeat", HUGE], MAX_BENCH_REPEAT),
    (["bench", "--repeat", MAX_BENCH_REPEAT + 1], MAX_BENCH_REPEAT),
    (["train", "--threads", 100000], MAX_THREADS),  # (torch crashed on it)
    (["sample", "-o", "D", "--threads", MAX_THREADS + 1], MAX_THREADS),
    (["train", "--batch-size", HUGE], MAX_BATCH_SIZE),  # (it hung)
    (["train", "--batch-size", MAX_BATCH_SIZE + 1], MAX_BATCH_SIZE),
])
def test_counts_above_their_maximum_are_refused(argv, limit):
    with pytest.raises(UsageError) as refusal:
        build_parser().parse_args([str(a) for a in argv])
    message = str(refusal.value)
    assert argv[-2] in message and f"at most {limit:,}" in message
    assert len(message) < 200  # a 21-digit number is shown by its length


@pytest.mark.parametrize("argv", [
    ["train", "--num-samples", MAX_SAMPLES], ["sample", "-o", "D", "--num-samples", MAX_SAMPLES],
    ["bench", "--steps", MAX_BENCH_STEPS, "--warmup", MAX_BENCH_STEPS, "--repeat", MAX_BENCH_REPEAT],
    ["train", "--threads", MAX_THREADS, "--batch-size", MAX_BATCH_SIZE],
])
def test_counts_at_their_maximum_are_accepted(argv):
    build_parser().parse_args([str(a) for a in argv])


@pytest.mark.parametrize("argv", [
    # the count comes first: the flag after it would be the error if the count were let through
    ["train", "--num-samples", HUGE, "--steps", 0],
    ["sample", "--num-samples", HUGE, "-o", "/nonexistent-run-dir"],
    ["bench", "--steps", HUGE, "--engines", "nosuch"],
    ["bench", "--repeat", HUGE, "--engines", "nosuch"],
    ["train", "--threads", HUGE, "--steps", 0],
    ["train", "--batch-size", HUGE, "--steps", 0],
])
def test_a_huge_count_is_one_line_from_the_command_line(argv):
    line = refused(argv)
    assert argv[1] in line and "at most" in line


# ---------------------------------------------------------------- 7. a reader that goes away

@pytest.mark.parametrize("engine", ["pure", "auto", "torch"])
@pytest.mark.parametrize("out_dir", [False, True], ids=["no -o", "-o"])
def test_a_reader_that_goes_away_ends_train_quietly(docs_txt, tmp_path, engine, out_dir):
    """`microgpt train | head -1`: no line on stderr, status 1, and with -o the run saved."""
    if engine == "torch" and os.environ.get("MICROGPT_REQUIRE_TORCH") != "1":
        pytest.importorskip("torch")
    run_dir = tmp_path / "run"
    argv = ["train", "-i", docs_txt, *TINY[:-2], "--engine", engine, "--steps", 100000, "--num-samples", 0]
    child = start_module(argv + (["-o", run_dir] if out_dir else []))
    try:
        line = child.stdout.readline()
        while line and not line.startswith("step"):  # a step done: with -o there is a run to save
            line = child.stdout.readline()
        assert line
        child.stdout.close()  # the reader goes away
        err = child.stderr.read()
        status = child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert [line for line in err.splitlines() if not line.startswith("microgpt: note:")] == []
    assert status == 1
    if out_dir:
        assert rundir.load(run_dir).step >= 1


# ---------------------------------------------------------------- 8. a stopped bench ends its worker

def _children(pid):
    """The pids of pid's child processes, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _alive(pid):
    """Whether pid is a process that has not ended (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("signame,status,line", [
    ("SIGTERM", 128 + signal.SIGTERM, "microgpt: SIGTERM: benchmark stopped, its worker ended"),
    ("SIGHUP", 128 + signal.SIGHUP, "microgpt: SIGHUP: benchmark stopped, its worker ended"),
    ("SIGINT", 130, "microgpt: interrupted"),
])
def test_a_signal_to_bench_ends_its_worker(docs_txt, signame, status, line):
    child = start_module(["bench", "-i", docs_txt, "--engines", "pure", "--n-embd", "8", "--n-head", "2",
                          "--block-size", "8", "--steps", MAX_BENCH_STEPS, "--warmup", 0, "--repeat", 1])
    workers = []
    try:
        deadline = time.time() + 60
        while not workers:  # the worker: a child of bench running worker_main
            assert time.time() < deadline, "the benchmark's worker did not start"
            assert child.poll() is None, child.communicate()
            for pid in _children(child.pid):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if b"worker_main" in f.read():
                            workers.append(pid)
                except OSError:
                    pass
            time.sleep(0.05)
        child.send_signal(getattr(signal, signame))
        _, err = child.communicate(timeout=60)
        assert child.returncode == status, err
        assert err == line + "\n"
        assert not _alive(workers[0])  # killed, and waited for by bench before it ended
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pid in workers:  # before the fix: the orphaned worker ran on; end it (by its pid)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- 9. Ctrl-C without --out-dir: one line

def test_ctrl_c_without_out_dir_is_one_line(docs_txt):
    child = start_module(["train", "-i", docs_txt, *TINY, "--steps", 100000, "--num-samples", 0])
    try:
        deadline = time.time() + 60
        while True:
            assert time.time() < deadline, "training did not get going"
            out = child.stdout.readline()
            assert out, child.stderr.read()
            if out.startswith("step    3 /"):
                break
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert err == "microgpt: interrupted\n"


def test_ctrl_c_on_a_terminal_ends_the_progress_line_once(docs_txt, monkeypatch):
    from microgpt import cli_train

    class TerminalProgress(cli_train.Progress):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.tty = True  # as on a terminal: the progress line ends in \r

    def one_step_then_ctrl_c(run, progress, **kw):
        progress(1, 3.3, 0.01, 0.001)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "Progress", TerminalProgress)
    monkeypatch.setattr(cli_train, "train", one_step_then_ctrl_c)
    got, out, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 5, "--num-samples", 0])
    assert got == 130
    assert err == "microgpt: interrupted\n"
    assert out.endswith(" | eta 0:00\r\n")  # the open line ended, and nothing more

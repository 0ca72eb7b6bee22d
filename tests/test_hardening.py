"""Hostile input and faults: each ends in one line and a stated exit status, and no file
the user had is lost or overwritten (README, "Limits and failure behaviour")."""
import json
import math
import os
import time

import pytest
from support import (SMALL_DOCS, TINY, assert_one_error_line, edit_checkpoint, other_name_for, refused,
                     reseal_checkpoint, run_main, write_docs)

from microgpt import CheckpointError, checkpoint, rundir
from microgpt.data import names_path

DOCS = SMALL_DOCS


@pytest.fixture
def docs_txt(tmp_path):
    return write_docs(tmp_path / "v.txt", DOCS)


@pytest.fixture
def tiny_run(docs_txt, tmp_path):
    got, _, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 2, "--num-samples", 0, "-o", tmp_path / "run"])
    assert got == 0, err
    return tmp_path / "run"


# ---------------------------------------------------------------- 1. outputs that alias inputs

@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_log_that_is_the_input_is_refused(docs_txt, tmp_path, spelling):
    before = docs_txt.read_bytes()
    log = other_name_for(docs_txt, spelling, tmp_path)
    line = refused(["train", "-i", docs_txt, *TINY, "--steps", 1, "--log", log])
    assert "--log" in line and "--input" in line
    assert docs_txt.read_bytes() == before


def test_log_that_is_the_input_through_a_symlinked_input(docs_txt, tmp_path):
    before = docs_txt.read_bytes()
    link = tmp_path / "link.txt"
    os.symlink(docs_txt, link)
    refused(["train", "-i", link, *TINY, "--steps", 1, "--log", docs_txt])
    assert docs_txt.read_bytes() == before


def test_log_that_is_the_cached_names_data_is_refused(docs_txt):
    refused(["train", "-i", docs_txt, *TINY, "--steps", 1, "--log", names_path()])


def test_log_into_the_checkpoint_is_refused(tiny_run, tmp_path):
    ckpt = tiny_run / "checkpoint.json"
    before = ckpt.read_bytes()
    line = refused(["train", "--resume", tiny_run, "--steps", 4, "--log", ckpt])
    assert "checkpoint" in line
    refused(["train", "--resume", tiny_run, "--steps", 4, "--log", tiny_run / "x" / ".." / "checkpoint.json"])
    assert ckpt.read_bytes() == before
    assert rundir.load(tiny_run).step == 2


def test_log_that_is_the_resumed_runs_data_is_refused(tiny_run, docs_txt):
    before = docs_txt.read_bytes()
    refused(["train", "--resume", tiny_run, "--steps", 4, "--log", docs_txt])
    assert docs_txt.read_bytes() == before


# ---------------------------------------------------------------- 2. sizes bounded before building

@pytest.mark.parametrize("flag,value", [("--n-embd", 10**7), ("--block-size", 10**9), ("--n-layer", 10**6),
                                        ("--n-head", 10**7)])
def test_huge_size_flags_are_refused_at_once(docs_txt, flag, value):
    t0 = time.perf_counter()
    argv = ["train", "-i", docs_txt, "--steps", 1, "--engine", "pure", flag, value]
    if flag == "--n-head":
        argv += ["--n-embd", value]
    line = refused(argv)
    assert "limit" in line
    assert time.perf_counter() - t0 < 5


def test_parameter_count_is_bounded(docs_txt):
    line = refused(["train", "-i", docs_txt, "--steps", 1, "--engine", "pure", "--n-embd", 2048, "--n-layer", 8])
    assert "parameters" in line and "10,000,000" in line


@pytest.mark.parametrize("field,value", [("n_embd", 10**7), ("block_size", 10**9), ("n_layer", 10**6),
                                         ("vocab_size", 10**8)])
def test_huge_sizes_in_a_checkpoint_are_refused(tiny_run, field, value):
    def edit(obj):
        obj["config"][field] = value
        if field == "n_embd":
            obj["config"]["n_head"] = 1
    edit_checkpoint(tiny_run, edit)
    t0 = time.perf_counter()
    line = refused(["train", "--resume", tiny_run, "--steps", 4])
    assert "limit" in line
    refused(["sample", "-o", tiny_run])
    assert time.perf_counter() - t0 < 5


# ---------------------------------------------------------------- 3. numeric guard

@pytest.mark.parametrize("lr", ["1", "1e308"])
def test_divergence_without_save_every_keeps_the_last_finite_state(docs_txt, tmp_path, lr):
    out = tmp_path / "D"
    got, stdout, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 200, "--learning-rate", lr,
                                 "-o", out, "--num-samples", 0])
    assert got == 1
    line = assert_one_error_line(err)
    assert "diverged at step" in line and "--learning-rate" in line
    assert "nan" not in stdout
    ckpt = rundir.load(out)  # loadable: every number finite (the loader refuses others)
    assert "after step %d" % ckpt.step in line
    assert ckpt.step < 200


@pytest.mark.parametrize("lr", ["1", "1e308"])
def test_divergence_with_save_every_keeps_the_last_saved_checkpoint(docs_txt, tmp_path, lr):
    out = tmp_path / "D"
    got, stdout, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 200, "--learning-rate", lr,
                                 "-o", out, "--save-every", 1, "--num-samples", 0])
    assert got == 1
    line = assert_one_error_line(err)
    assert "diverged at step" in line
    ckpt = rundir.load(out)
    step = int(line.split("diverged at step ")[1].split()[0])
    assert ckpt.step < step
    for mats in (ckpt.weights, ckpt.adam_m, ckpt.adam_v):
        assert all(math.isfinite(x) for mat in mats.values() for row in mat for x in row)


def test_divergence_without_out_dir_is_one_line(docs_txt, tmp_path):
    log = tmp_path / "log.jsonl"
    got, _, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 50, "--learning-rate", "1e308",
                            "--log", log])
    assert got == 1
    assert "nothing was saved" in assert_one_error_line(err)
    for line in log.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the log"))


@pytest.mark.parametrize("where,value", [
    (("weights",), float("nan")), (("weights",), float("inf")), (("weights",), "1e999"),
    (("optimizer", "m"), float("-inf")), (("optimizer", "v"), -1.0),
    (("training", "learning_rate"), float("nan")), (("training", "learning_rate"), float("inf")),
    (("training", "learning_rate"), 0), (("training", "learning_rate"), -0.01),
    (("training", "val_fraction"), -1), (("training", "val_fraction"), 1), (("config", "init_std"), float("nan")),
])
def test_loader_refuses_numbers_out_of_range(tiny_run, where, value):
    path = tiny_run / "checkpoint.json"
    obj = json.loads(path.read_text(encoding="utf-8"))
    target = obj
    for key in where[:-1]:
        target = target[key]
    if where[0] in ("weights", "optimizer"):
        mats = target[where[-1]] if len(where) > 1 else obj["weights"]
        mats["wte"][0][0] = "@@"
        text = json.dumps(obj).replace('"@@"', value if isinstance(value, str) else json.dumps(value))
    else:
        target[where[-1]] = "@@"
        text = json.dumps(obj).replace('"@@"', json.dumps(value))
    path.write_text(text, encoding="utf-8")
    reseal_checkpoint(path)  # so that the number, not the checksum, is what is refused
    with pytest.raises(CheckpointError) as refusal:
        rundir.load(tiny_run)
    assert "checksum" not in str(refusal.value)
    refused(["sample", "-o", tiny_run])


# ---------------------------------------------------------------- 4. the loader at its boundary

def raw_edit(run_dir, edit):
    path = run_dir / "checkpoint.json"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")


@pytest.mark.parametrize("case", ["deep", "seed5000", "step400", "weight400", "rng_out_of_range",
                                  "rng_negative", "nul_path", "gauss400", "gauss_nan"])
def test_hostile_checkpoints_are_one_line(tiny_run, case):
    if case == "deep":
        (tiny_run / "checkpoint.json").write_text("[" * 100_000 + "]" * 100_000)
    else:
        def edit(obj):
            if case == "seed5000":
                obj["training"]["seed"] = "@@" + "7" * 5000
            elif case == "step400":
                obj["training"]["num_steps"] = "@@" + "9" * 400
            elif case == "weight400":
                obj["weights"]["wte"][0][0] = "@@" + "9" * 400
            elif case == "rng_out_of_range":
                obj["rng_state"][1][0] = "@@" + str(2 ** 40)
            elif case == "rng_negative":
                obj["rng_state"][1][0] = -1
            elif case == "nul_path":
                obj["data"]["path"] = "/tmp/a\0b"
            elif case == "gauss400":
                obj["rng_state"][2] = "@@" + "9" * 400
            elif case == "gauss_nan":
                obj["rng_state"][2] = "@@NaN"
        path = tiny_run / "checkpoint.json"
        obj = json.loads(path.read_text(encoding="utf-8"))
        edit(obj)
        text = json.dumps(obj)
        import re
        text = re.sub(r'"@@(\d+|NaN)"', r"\1", text)
        path.write_text(text, encoding="utf-8")
        reseal_checkpoint(path)  # so that the field, not the checksum, is what is refused
    with pytest.raises(CheckpointError) as refusal:
        rundir.load(tiny_run)
    assert "checksum" not in str(refusal.value)
    refused(["train", "--resume", tiny_run, "--steps", 4])
    refused(["sample", "-o", tiny_run])


def flip_a_digit(path):
    """Change one digit of the first weight in the file's text, as a hand edit or a bad
    disk would: the JSON stays valid and every field stays in range."""
    text = path.read_text(encoding="utf-8")
    start = text.index('"wte"')
    i = next(i for i in range(start, len(text)) if text[i] in "123456789" and text[i + 1].isdigit())
    path.write_text(text[:i] + ("2" if text[i] == "1" else "1") + text[i + 1:], encoding="utf-8")


@pytest.mark.parametrize("edit", ["flipped_digit", "no_checksum", "learning_rate"])
def test_an_edited_checkpoint_is_refused_as_tampered(tiny_run, edit):
    path = tiny_run / "checkpoint.json"
    if edit == "flipped_digit":
        flip_a_digit(path)
    elif edit == "no_checksum":
        edit_checkpoint(tiny_run, lambda obj: obj.pop("content_sha256"), reseal=False)
    else:
        edit_checkpoint(tiny_run, lambda obj: obj["training"].update(learning_rate=0.02), reseal=False)
    before = path.read_bytes()
    for argv in (["sample", "-o", tiny_run], ["train", "--resume", tiny_run, "--steps", 4]):
        line = refused(argv)
        assert str(path) in line and "checksum" in line
        assert "does not match" in line or "no content checksum" in line
    assert path.read_bytes() == before


def test_the_checksum_is_of_the_content_not_the_layout(tiny_run):
    # the same values written another way (one line, no indentation) are the same checkpoint
    saved = rundir.load(tiny_run)
    edit_checkpoint(tiny_run, lambda obj: None, reseal=False)
    assert rundir.load(tiny_run) == saved


def test_a_version_1_checkpoint_without_checksum_is_read_and_resaved_sealed(tiny_run):
    # written before checksums existed: checked field by field, and sealed on the next save
    def as_version_1(obj):
        obj.pop("content_sha256")
        obj["version"] = 1
    edit_checkpoint(tiny_run, as_version_1, reseal=False)
    assert rundir.load(tiny_run).step == 2
    got, _, err = run_main(["train", "--resume", tiny_run, "--steps", 3, "--num-samples", 0])
    assert got == 0, err
    obj = json.loads((tiny_run / "checkpoint.json").read_text(encoding="utf-8"))
    assert obj["version"] == checkpoint.VERSION and obj["content_sha256"] == checkpoint.content_sha256(obj)
    assert rundir.load(tiny_run).step == 3


def test_checkpoint_size_is_bounded_before_reading(tiny_run, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 100)
    line = refused(["sample", "-o", tiny_run])
    assert "larger than the limit" in line


def test_a_fifo_for_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "checkpoint.json")
    line = refused(["sample", "-o", tmp_path / "run"])
    assert "not a regular file" in line


# ---------------------------------------------------------------- 5. one run per directory

def test_a_locked_run_directory_is_refused(docs_txt, tmp_path):
    (tmp_path / "D").mkdir()
    with rundir.RunLock(str(tmp_path / "D")):
        line = refused(["train", "-i", docs_txt, *TINY, "--steps", 1, "-o", tmp_path / "D"])
        assert "in use by another microgpt run" in line
    assert os.listdir(tmp_path / "D") == []


def test_two_resumes_of_one_run_are_refused(tiny_run):
    before = (tiny_run / "checkpoint.json").read_bytes()
    with rundir.RunLock(str(tiny_run)):
        refused(["train", "--resume", tiny_run, "--steps", 4])
    assert (tiny_run / "checkpoint.json").read_bytes() == before
    got, _, err = run_main(["train", "--resume", tiny_run, "--steps", 4, "--num-samples", 0])
    assert got == 0, err  # the lock is released when a run ends


def test_a_second_process_is_refused_while_a_run_trains(docs_txt, tmp_path):
    from support import run_module, start_module
    d = tmp_path / "D"
    child = start_module(["train", "-i", docs_txt, *TINY, "--steps", 100000, "-o", d, "--num-samples", 0])
    try:
        deadline = time.time() + 30
        while True:  # the child holds the lock once its first progress line is out
            assert time.time() < deadline
            line = child.stdout.readline()
            if line.startswith("step"):
                break
        second = run_module(["train", "-i", docs_txt, *TINY, "--steps", 1, "-o", d, "--num-samples", 0])
        assert second.returncode == 2
        assert "in use" in assert_one_error_line(second.stderr)
    finally:
        child.terminate()
        child.wait(timeout=30)
    assert rundir.load(d).step > 0  # SIGTERM saved the first run's checkpoint, untouched by the second


def test_leftover_temporary_files_are_removed(tiny_run):
    leftover = tiny_run / ".tmp-abc123checkpoint.json"
    leftover.write_text("{half a chec")
    got, _, err = run_main(["train", "--resume", tiny_run, "--steps", 3, "--num-samples", 0])
    assert got == 0, err
    assert os.listdir(tiny_run) == ["checkpoint.json"]


# ---------------------------------------------------------------- 6. bounded inputs, odd outputs

@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_an_input_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    path = {"dev_zero": "/dev/zero", "directory": str(tmp_path)}.get(kind)
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    t0 = time.perf_counter()
    line = refused(["train", "-i", path, *TINY, "--steps", 1])
    assert "not a regular file" in line or "Is a directory" in line
    assert time.perf_counter() - t0 < 5


def test_input_size_is_bounded(docs_txt, monkeypatch):
    from microgpt import data
    monkeypatch.setattr(data, "MAX_INPUT_BYTES", 10)
    assert "larger than the limit" in refused(["train", "-i", docs_txt, *TINY, "--steps", 1])


def test_a_byte_order_mark_is_not_a_vocabulary_character(tmp_path):
    plain = write_docs(tmp_path / "plain.txt", DOCS)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    outs = []
    for path in (plain, bom):
        got, out, err = run_main(["train", "-i", path, *TINY, "--steps", 2, "--num-samples", 2])
        assert got == 0, err
        outs.append([line.split(" | ms")[0].split("ms/step")[0] for line in out.splitlines()
                     if "vocab size" in line or line.startswith("sample")] + [out.split(" | ")[1]])
    assert outs[0] == outs[1]  # the same vocabulary, the same run


@pytest.mark.parametrize("value", ["1e-310", "1e-7"])
def test_a_vanishing_temperature_is_refused(docs_txt, value):
    line = refused(["train", "-i", docs_txt, *TINY, "--steps", 1, "--temperature", value])
    assert "--temperature" in line


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_log_is_one_line_and_the_checkpoint_is_saved(docs_txt, tmp_path):
    got, _, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 5, "--log", "/dev/full",
                            "-o", tmp_path / "D", "--num-samples", 0])
    assert got == 1
    line = assert_one_error_line(err)
    assert "cannot write log file /dev/full" in line and "saved" in line
    assert rundir.load(tmp_path / "D").step == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_stdout_that_cannot_be_written_is_no_traceback(docs_txt, stdout):
    import subprocess
    from support import child_env, module_argv, PACKAGE_PARENT
    argv = module_argv(["train", "-i", docs_txt, *TINY, "--steps", 3, "--num-samples", 1])
    if stdout == "full":
        with open("/dev/full", "w") as full:
            child = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
                                   env=child_env(), cwd=PACKAGE_PARENT)
        assert child.returncode == 1
        assert "cannot write output" in assert_one_error_line(child.stderr)
    else:
        child = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                               env=child_env(), cwd=PACKAGE_PARENT,
                               preexec_fn=lambda: os.close(1))
        assert child.returncode == 0, child.stderr
        assert "Traceback" not in child.stderr


def test_a_reader_that_goes_away_is_no_traceback(docs_txt, tmp_path):
    # `microgpt sample -o run | head -1`: the pipe closes after the first line
    import subprocess
    from support import child_env, module_argv, PACKAGE_PARENT
    got, _, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 2, "--num-samples", 0,
                            "-o", tmp_path / "run"])
    assert got == 0, err
    child = subprocess.Popen(module_argv(["sample", "-o", tmp_path / "run", "--num-samples", 5000]),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=child_env(), cwd=PACKAGE_PARENT)
    assert child.stdout.readline().startswith("sample  1: ")
    child.stdout.close()
    stderr = child.stderr.read()
    assert child.wait(timeout=120) == 1
    assert stderr == ""


def test_bench_refuses_huge_sizes_at_once():
    t0 = time.perf_counter()
    line = refused(["bench", "--n-embd", "16,10000000", "--engines", "pure"])
    assert "limit" in line and time.perf_counter() - t0 < 5


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000 + "\n", '{"step": 1, "loss": ' + "9" * 5000 + "}\n"])
def test_plot_on_a_hostile_log_is_one_line(tmp_path, content):
    log = tmp_path / "log.jsonl"
    log.write_text(content)
    refused(["plot", log, "--out", tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()


def test_plot_refuses_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert "not a regular file" in refused(["plot", tmp_path / "fifo", "--out", tmp_path / "x.png"])


# ---------------------------------------------------------------- 7. no empty run directory after an error

@pytest.mark.parametrize("out", ["new", "new/deeper", "existing/new", "existing"])
def test_an_error_before_the_first_save_leaves_no_new_directory(docs_txt, tmp_path, out):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "keep.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # the log's folder does not exist: found only once the run directory is prepared
    line = refused(["train", "-i", docs_txt, *TINY, "--steps", 2, "-o", tmp_path / out,
                    "--log", tmp_path / "nowhere" / "log.jsonl"])
    assert "cannot write log file" in line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "existing" / "keep.txt").read_text() == "mine"


def test_an_existing_empty_directory_is_kept_after_an_error(docs_txt, tmp_path):
    (tmp_path / "D").mkdir()
    refused(["train", "-i", docs_txt, *TINY, "--steps", 2, "-o", tmp_path / "D",
             "--log", tmp_path / "nowhere" / "log.jsonl"])
    assert (tmp_path / "D").is_dir() and os.listdir(tmp_path / "D") == []


def test_a_run_directory_is_kept_once_a_checkpoint_is_saved(docs_txt, tmp_path):
    # the log fails after the first step: the checkpoint of that step is saved and kept
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    got, _, err = run_main(["train", "-i", docs_txt, *TINY, "--steps", 3, "-o", tmp_path / "new" / "D",
                            "--log", "/dev/full", "--num-samples", 0])
    assert got == 1, err
    assert rundir.load(tmp_path / "new" / "D").step == 1


# ---------------------------------------------------------------- 8. signals: SIGHUP, and quick repeats

def _wait_for_step(child, step):
    deadline = time.time() + 60
    while True:
        assert time.time() < deadline, "training did not get going"
        line = child.stdout.readline()
        assert line, f"the run ended early: {child.stderr.read()}"
        if line.startswith(f"step {step:4d} /"):
            return


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT", "SIGINT"), ("SIGHUP",), ("SIGTERM", "SIGHUP", "SIGINT")],
                         ids=["three_ctrl_c", "sighup", "mixed"])
def test_signals_in_quick_succession_save_once_and_cleanly(docs_txt, tmp_path, signals):
    # (the kernel merges a signal into one of its kind still pending, so three Ctrl-Cs may
    # arrive as one: the mixed case, and the next test, reach the later-signal paths for sure)
    import signal
    from support import start_module
    d, log = tmp_path / "D", tmp_path / "log.jsonl"
    child = start_module(["train", "-i", docs_txt, *TINY, "--steps", 100000, "-o", d, "--log", log,
                          "--num-samples", 0])
    try:
        _wait_for_step(child, 3)
        for name in signals:  # back to back: the later ones land in the step or the save
            child.send_signal(getattr(signal, name))
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    # the one that counts is the first Python runs (of signals pending together, the lowest number)
    names = {"Ctrl-C" if name == "SIGINT" else name for name in signals}
    assert any(lines[0].startswith(f"microgpt: {name} at step ") for name in names), lines[0]
    assert "checkpoint saved to" in lines[0]
    assert os.listdir(d) == ["checkpoint.json"]  # no temporary file: the save finished
    ckpt = rundir.load(d)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert ckpt.step == steps[-1] >= 3  # the state after the last step the log shows


def test_signals_during_the_save_are_ignored_and_the_save_finishes(docs_txt, tmp_path, monkeypatch):
    # deterministic: the signals are sent from inside the save, as the file is being written
    import signal
    from microgpt import get_engine
    from microgpt.progress import Progress
    from microgpt.run import RunSettings, Stopped, build_run, train

    run = build_run(get_engine("pure"), RunSettings(input=str(docs_txt), n_embd=8, n_head=2, block_size=8, steps=2))
    real_write = rundir.write_atomic

    def write_while_signalled(path, raw):
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGINT):
            os.kill(os.getpid(), signum)
        return real_write(path, raw)

    monkeypatch.setattr(rundir, "write_atomic", write_while_signalled)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    with open(os.devnull, "w") as quiet, pytest.raises(Stopped) as stopped:
        train(run, Progress(2, quiet), out_dir=str(tmp_path / "D"))
    assert stopped.value.signum == signal.SIGINT and stopped.value.ignored == 2
    assert rundir.load(tmp_path / "D").step == 2  # the save the first signal asked for is whole
    # the library's StopSignals puts the handlers back (only the command line leaves them)
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == handlers


# ---------------------------------------------------------------- 9. Values of two engines in one expression

MIXED_OPERATORS = ["add", "sub", "mul", "truediv", "pow", "iadd", "imul"]


@pytest.mark.parametrize("pure_first", [True, False], ids=["pure_op_compiled", "compiled_op_pure"])
@pytest.mark.parametrize("name", MIXED_OPERATORS)
def test_pure_and_compiled_values_are_not_combined(name, pure_first):
    import operator
    from microgpt import available_engines, get_engine
    if "compiled" not in available_engines():
        pytest.skip("the compiled engine is not built here")
    pure, compiled = get_engine("pure"), get_engine("compiled")
    with compiled.graph():
        a, b = pure.Value(1.5), compiled.Value(2.0)
        x, y = (a, b) if pure_first else (b, a)
        with pytest.raises(TypeError) as refusal:
            getattr(operator, name)(x, y)
        message = str(refusal.value)
        assert "pure-engine Value" in message and "compiled-engine Value" in message
        assert "one engine" in message
        # and the Values themselves are untouched
        assert (a.data, a.grad, b.data, b.grad) == (1.5, 0, 2.0, 0)


def test_a_compiled_value_is_not_made_of_a_pure_one():
    from microgpt import available_engines, get_engine
    if "compiled" not in available_engines():
        pytest.skip("the compiled engine is not built here")
    pure, compiled = get_engine("pure"), get_engine("compiled")
    with compiled.graph():
        with pytest.raises(TypeError, match="compiled-engine"):
            compiled.Value(pure.Value(1.0))
        v = compiled.Value(1.0)
        with pytest.raises(TypeError, match="compiled-engine"):
            v.data = pure.Value(2.0)
        assert v.data == 1.0


def test_a_pure_value_is_not_made_of_a_compiled_one():
    from microgpt import available_engines, get_engine
    if "compiled" not in available_engines():
        pytest.skip("the compiled engine is not built here")
    pure, compiled = get_engine("pure"), get_engine("compiled")
    with compiled.graph():
        c = compiled.Value(3.0)
        with pytest.raises(TypeError, match="one engine"):
            pure.Value(c)
        # a user-defined node over a compiled Value: refused by backward, before any grad is written
        r = pure.Value(1.0, (c,), (2.0,))
        with pytest.raises(TypeError, match="one engine"):
            r.backward()
        assert c.grad == 0 and r.grad == 0


# ---------------------------------------------------------------- 10. the names data set's cache, offline

UNREACHABLE = "http://127.0.0.1:9/names.txt"  # the discard port on loopback: nothing answers


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("MICROGPT_NAMES_URL", UNREACHABLE)
    cache = tmp_path / "cache"
    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(cache))
    return cache


def test_offline_with_an_empty_cache_names_the_cache_and_what_to_do(offline):
    line = refused(["train", "--steps", 1, "--engine", "pure"])
    assert str(offline / "names.txt") in line and UNREACHABLE in line
    assert "copy names.txt" in line and "MICROGPT_NAMES_URL" in line and "--input" in line
    assert not (offline / "names.txt").exists()


def test_a_cached_names_txt_with_the_wrong_checksum_is_refused_by_name(offline):
    import hashlib
    from microgpt.data import NAMES_SHA256
    offline.mkdir()
    wrong = b"emma\nolivia\n"  # another file put there by hand: it parses, it is not the data set
    (offline / "names.txt").write_bytes(wrong)
    line = refused(["train", "--steps", 1, "--engine", "pure"])
    assert str(offline / "names.txt") in line
    assert hashlib.sha256(wrong).hexdigest() in line and NAMES_SHA256 in line
    assert "delete it" in line and "--input" in line
    assert (offline / "names.txt").read_bytes() == wrong
    assert os.listdir(offline) == ["names.txt"]

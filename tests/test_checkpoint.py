"""Checkpoints: exact resume on every engine, the file format, crashes and signals, bad input.

Most runs are tiny (a small text, n_embd 8, block 8) and run main(argv) in-process;
the resume test on the names data checks the golden figures; signals and kill -9
run the real command in a subprocess.
"""
import json
import os
import pickle
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from support import (assert_one_error_line, edit_checkpoint, load_golden, run_main, sample_lines, sample_texts, start_module,
                     write_docs)

from microgpt import CheckpointError, checkpoint, rundir

TINY_DOCS = ["anna", "bob", "carla", "david", "eve", "frank", "grace", "heidi", "ivan", "judy",
             "mallory", "oscar", "peggy", "trent", "victor", "walter"]
TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]


@pytest.fixture
def tiny_txt(tmp_path):
    return write_docs(tmp_path / "tiny.txt", TINY_DOCS)


def run_ok(argv):
    status, out, err = run_main(argv)
    assert status == 0, err
    return out


def read_log(path):
    records = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    samples = [r["samples"] for r in records if "samples" in r]
    return losses, samples


def snapshot_saves(monkeypatch, tmp_path):
    """Wrap rundir.save: after each save, copy the run directory to tmp_path/at-<step>."""
    real_save = rundir.save

    def save(ckpt, directory):
        path = real_save(ckpt, directory)
        shutil.copytree(directory, tmp_path / f"at-{ckpt.step}", dirs_exist_ok=True)
        return path

    monkeypatch.setattr(rundir, "save", save)


# --- resume equality ----------------------------------------------------------

def test_resume_equals_uninterrupted_run(engine, tiny_txt, tmp_path, monkeypatch):
    common = ["-i", tiny_txt, *TINY, "--engine", engine.name, "--num-samples", 5]
    with monkeypatch.context() as patch:
        snapshot_saves(patch, tmp_path)
        full = run_ok(["train", *common, "--steps", 20, "--save-every", 10, "-o", tmp_path / "full",
                       "--log", tmp_path / "full.jsonl"])
    assert sorted(os.listdir(tmp_path / "at-10")) == ["checkpoint.json"]
    assert rundir.load(tmp_path / "at-10").step == 10

    shutil.copytree(tmp_path / "at-10", tmp_path / "resumed")
    resumed = run_ok(["train", "--resume", tmp_path / "resumed", "--engine", engine.name, "--num-samples", 5,
                      "--log", tmp_path / "resumed.jsonl"])
    assert "resuming" in resumed

    full_losses, full_samples = read_log(tmp_path / "full.jsonl")
    resumed_losses, resumed_samples = read_log(tmp_path / "resumed.jsonl")
    assert sorted(full_losses) == list(range(1, 21))
    assert sorted(resumed_losses) == list(range(11, 21))
    for step in range(11, 21):
        assert resumed_losses[step] == full_losses[step], step  # bit for bit
    assert resumed_samples == full_samples
    assert sample_lines(resumed)[:5] == sample_lines(full)[:5]
    # the two end states are the same checkpoint, byte for byte
    assert (tmp_path / "resumed" / "checkpoint.json").read_bytes() == (tmp_path / "full" / "checkpoint.json").read_bytes()

    # and 'sample' continues the generator as training left it: the same samples again
    again = run_ok(["sample", "-o", tmp_path / "full", "--num-samples", 5, "--engine", engine.name])
    assert sample_lines(again) == sample_lines(full)[:5]


def test_stopped_and_resumed_run_on_names_matches_golden(engine, tmp_path, monkeypatch):
    """The reference's 20 steps, stopped by SIGTERM right after step 10 and resumed."""
    golden = load_golden("names_default_20_steps.json")
    real_save, stopped = rundir.save, []

    def save_then_stop(ckpt, directory):
        path = real_save(ckpt, directory)
        if ckpt.step == 10 and not stopped:  # the --save-every save; the next one is the stop's
            stopped.append(True)
            signal.raise_signal(signal.SIGTERM)  # as if the user stopped the run here
        return path

    run_dir = tmp_path / "run"
    # a context, not monkeypatch.undo(), which would also drop the autouse cache setting
    with monkeypatch.context() as patch:
        patch.setattr(rundir, "save", save_then_stop)
        status, out, err = run_main(["train", "--engine", engine.name, "--steps", 20, "--save-every", 10,
                                "-o", run_dir, "--log", tmp_path / "first.jsonl"])
    assert status == 130, err
    assert f"SIGTERM at step 10 of 20: checkpoint saved to {run_dir / 'checkpoint.json'}" in err
    assert not sample_lines(out)
    first, _ = read_log(tmp_path / "first.jsonl")
    assert [first[k] for k in range(1, 11)] == golden["losses"][:10]

    out = run_ok(["train", "--resume", run_dir, "--engine", engine.name, "--log", tmp_path / "second.jsonl"])
    second, samples = read_log(tmp_path / "second.jsonl")
    assert sorted(second) == list(range(11, 21))
    assert [second[k] for k in range(11, 21)] == golden["losses"][10:20]
    assert samples == [golden["samples"]]
    assert sample_texts(out) == golden["samples"]
    # train, then sample: the reference's samples again (the first few keep the test quick)
    out = run_ok(["sample", "-o", run_dir, "--engine", engine.name, "--num-samples", 5])
    assert sample_texts(out) == golden["samples"][:5]


def test_resume_can_extend_steps_and_finished_run_resumes_to_samples(tiny_txt, tmp_path):
    run_ok(["train", "-i", tiny_txt, *TINY, "--steps", 4, "--num-samples", 2, "-o", tmp_path / "r", "--engine", "pure"])
    # a finished run resumed as it is: nothing to train, the same samples
    out = run_ok(["train", "--resume", tmp_path / "r", "--num-samples", 2, "--engine", "pure"])
    assert not [line for line in out.splitlines() if line.startswith("step ")]
    out = run_ok(["train", "--resume", tmp_path / "r", "--steps", 6, "--num-samples", 0, "--engine", "pure"])
    assert [line.split("|")[0].strip() for line in out.splitlines() if line.startswith("step ")] == \
        ["step    5 /    6", "step    6 /    6"]
    ckpt = rundir.load(tmp_path / "r")
    assert (ckpt.step, ckpt.num_steps) == (6, 6)


# --- the format ----------------------------------------------------------------

@pytest.fixture
def tiny_run(tiny_txt, tmp_path):
    """A finished 3-step run on the pure engine: its directory."""
    run_ok(["train", "-i", tiny_txt, *TINY, "--steps", 3, "--num-samples", 1, "-o", tmp_path / "run", "--engine", "pure"])
    return tmp_path / "run"


def test_file_is_documented_json(tiny_run, tiny_txt):
    obj = json.loads((tiny_run / "checkpoint.json").read_text(encoding="utf-8"))
    assert obj["format"] == "microgpt-checkpoint" and obj["version"] == checkpoint.VERSION
    assert set(obj) == {"format", "version", "written_by", "config", "vocab", "training", "data",
                        "rng_state", "weights", "optimizer", "content_sha256"}
    assert obj["content_sha256"] == checkpoint.content_sha256(obj)
    assert obj["config"] == {"vocab_size": 24, "n_layer": 1, "n_embd": 8, "block_size": 8, "n_head": 2,
                             "init_std": 0.08}
    assert obj["vocab"] == sorted(set("".join(TINY_DOCS)))
    assert obj["training"] == {"step": 3, "num_steps": 3, "learning_rate": 0.01, "seed": 42, "val_fraction": 0.0}
    assert obj["data"]["path"] == str(tiny_txt)
    assert obj["data"]["sha256"] == __import__("hashlib").sha256(tiny_txt.read_bytes()).hexdigest()
    assert list(obj["weights"]) == ["wte", "wpe", "lm_head", "layer0.attn_wq", "layer0.attn_wk",
                                    "layer0.attn_wv", "layer0.attn_wo", "layer0.mlp_fc1", "layer0.mlp_fc2"]
    assert len(obj["weights"]["wte"]) == 24 and len(obj["weights"]["wte"][0]) == 8
    assert list(obj["optimizer"]["m"]) == list(obj["weights"]) == list(obj["optimizer"]["v"])
    assert len(obj["rng_state"][1]) == 625


def test_floats_and_generator_round_trip_exactly(tiny_run):
    ckpt = rundir.load(tiny_run)
    # awkward floats survive the text form bit for bit
    odd = [0.1 + 0.2, 5e-324, -0.0, 1.7976931348623157e308, 1 / 3, -2.5e-17]
    ckpt.weights["wte"][0][:len(odd)] = odd
    rng = random.Random(7)
    rng.gauss(0, 1)  # leaves gauss_next set: a float inside the state
    ckpt.rng_state = rng.getstate()
    back = checkpoint.loads(checkpoint.dumps(ckpt))
    assert [x.hex() for x in back.weights["wte"][0][:len(odd)]] == [x.hex() for x in odd]
    assert back == ckpt
    restored = random.Random()
    restored.setstate(back.rng_state)
    assert [restored.random() for _ in range(5)] == [rng.random() for _ in range(5)]


def test_a_pickle_is_refused_and_never_executed(tiny_run, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling this creates the marker file

    # the payload is live: unpickling it elsewhere does create a file
    live = tmp_path / "live"
    with pickle.loads(pickle.dumps(type("P", (), {"__reduce__": lambda s: (open, (str(live), "w"))})())):
        pass
    assert live.exists()

    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        (tiny_run / "checkpoint.json").write_bytes(pickle.dumps(Payload(), protocol=protocol))
        for argv in (["sample", "-o", tiny_run], ["train", "--resume", tiny_run]):
            status, out, err = run_main(argv)
            assert status == 2
            line = assert_one_error_line(err)
            assert "checkpoint" in line
            if protocol:
                assert "pickle" in line
            assert not marker.exists()


def test_an_interrupted_write_keeps_the_previous_checkpoint(tiny_run, monkeypatch):
    before = (tiny_run / "checkpoint.json").read_bytes()
    ckpt = rundir.load(tiny_run)
    ckpt.step = 1

    def crash(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", crash)
        with pytest.raises(CheckpointError, match="No space left"):
            rundir.save(ckpt, tiny_run)
    assert (tiny_run / "checkpoint.json").read_bytes() == before
    assert os.listdir(tiny_run) == ["checkpoint.json"]  # no temporary file left behind
    assert rundir.load(tiny_run).step == 3


# --- bad input: one line, status 2, nothing overwritten -------------------------

def _truncate(run_dir):
    p = run_dir / "checkpoint.json"
    p.write_bytes(p.read_bytes()[:5000])


def _edit(change):
    return lambda run_dir: edit_checkpoint(run_dir, change)


def _no_file(run_dir):
    os.unlink(run_dir / "checkpoint.json")


BROKEN = [
    ("missing", _no_file, "does not exist"),
    ("truncated", _truncate, "truncated"),
    ("empty", lambda d: (d / "checkpoint.json").write_bytes(b""), "truncated"),
    ("not-a-checkpoint", _edit(lambda o: o.pop("format")), "not a microgpt checkpoint"),
    ("other-version", _edit(lambda o: o.update(version=99)), "version 99"),
    ("wrong-shape", _edit(lambda o: o["weights"]["wte"][3].pop()), "'wte'"),
    ("missing-matrix", _edit(lambda o: o["weights"].pop("lm_head")), "weights"),
    ("wrong-moment-shape", _edit(lambda o: o["optimizer"]["v"]["wpe"].pop()), "'wpe'"),
    ("vocab-mismatch", _edit(lambda o: o["vocab"].pop()), "vocab"),
    ("not-numbers", _edit(lambda o: o["weights"]["wte"][0].__setitem__(0, "x")), "not a number"),
    ("bad-rng", _edit(lambda o: o["rng_state"][1].pop()), "rng_state"),
]


@pytest.mark.parametrize("command", ["sample", "resume"])
@pytest.mark.parametrize("case,breaker,mentions", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_checkpoint_is_one_line(case, breaker, mentions, command, tiny_run, tmp_path):
    breaker(tiny_run)
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir()}
    log = tmp_path / "keep.jsonl"
    log.write_text("precious\n")
    argv = ["sample", "-o", tiny_run] if command == "sample" else ["train", "--resume", tiny_run, "--log", log]
    status, out, err = run_main(argv)
    assert status == 2
    assert mentions in assert_one_error_line(err)
    assert out == ""
    assert {p.name: p.read_bytes() for p in tiny_run.iterdir()} == before
    assert log.read_text() == "precious\n"


def test_bad_run_directories(tiny_run, tiny_txt, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    before = (tiny_run / "checkpoint.json").read_bytes()
    cases = [
        (["train", "-i", tiny_txt, *TINY, "--steps", 1, "-o", a_file], "is a file"),
        (["train", "--resume", a_file], "is a file"),
        (["sample", "-o", a_file], "is a file"),
        (["sample", "-o", tmp_path / "nowhere"], "no run directory"),
        (["train", "--resume", tmp_path / "nowhere"], "no run directory"),
        # another run's checkpoint is never overwritten by a fresh run
        (["train", "-i", tiny_txt, *TINY, "--steps", 1, "-o", tiny_run], "--resume"),
        # a resumed run keeps its settings and its data
        (["train", "--resume", tiny_run, "--n-embd", 16], "--n-embd 16 differs"),
        (["train", "--resume", tiny_run, "--seed", 1], "--seed 1 differs"),
        (["train", "--resume", tiny_run, "--steps", 2], "fewer than the 3 steps"),
        (["train", "--resume", tiny_run, "--val-fraction", 0.5], "--val-fraction 0.5 differs"),
        (["train", "-i", tiny_txt, *TINY, "--steps", 3, "--save-every", 1], "--save-every needs --out-dir"),
        (["train", "-i", tiny_txt, *TINY, "--steps", 3, "--eval-every", 1], "--eval-every needs --val-fraction"),
    ]
    for argv, mentions in cases:
        status, out, err = run_main(argv)
        assert status == 2, argv
        assert mentions in assert_one_error_line(err), argv
        assert a_file.read_text() == "keep me"
        assert (tiny_run / "checkpoint.json").read_bytes() == before
        assert not (tmp_path / "nowhere").exists()


def test_resume_against_other_data_is_refused(tiny_run, tiny_txt, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(TINY_DOCS[::-1]) + "\n", encoding="utf-8")
    status, _, err = run_main(["train", "--resume", tiny_run, "-i", other])
    assert status == 2
    assert "not the data the checkpoint was trained on" in assert_one_error_line(err)
    # the file the checkpoint names was changed in place
    tiny_txt.write_text("\n".join(TINY_DOCS + ["zed"]) + "\n", encoding="utf-8")
    status, _, err = run_main(["train", "--resume", tiny_run])
    assert status == 2
    assert "not the data the checkpoint was trained on" in assert_one_error_line(err)


def test_unwritable_run_directory(tiny_txt, tmp_path):
    if os.geteuid() == 0:
        # root writes through permission bits: use a directory the kernel refuses (sysfs)
        target = Path("/sys/microgpt-test-run")
        try:
            os.mkdir(target)
        except OSError:
            pass
        else:
            os.rmdir(target)
            pytest.skip("no directory here refuses root")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = ro / "run"
    status, out, err = run_main(["train", "-i", tiny_txt, *TINY, "--steps", 1, "-o", target])
    assert status == 2
    assert "cannot write to run directory" in assert_one_error_line(err)
    assert out == ""
    assert not target.exists()


# --- signals and crashes, on the real process -------------------------------------

def start_training(tiny_txt, run_dir, log, *extra):
    return start_module(["train", "-i", tiny_txt, *TINY, "--steps", "100000", "--engine", "pure",
                         "-o", run_dir, "--log", log, *extra])


def wait_for_step(proc, step, timeout=60):
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if line.startswith(f"step {step:4d} /"):
            return
        assert time.monotonic() < deadline, "training did not get going"
    raise AssertionError(f"the process ended before step {step}: {proc.stderr.read()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_saves_a_checkpoint_and_exits_130(signum, tiny_txt, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "log.jsonl"
    proc = start_training(tiny_txt, run_dir, log)
    try:
        wait_for_step(proc, 3)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"checkpoint saved to {run_dir / 'checkpoint.json'}" in err
    assert f"--resume {run_dir}" in err
    ckpt = rundir.load(run_dir)
    assert ckpt.num_steps == 100000 and ckpt.step >= 3
    losses, _ = read_log(log)
    assert max(losses) == ckpt.step  # saved right after the last step it logged
    # and it resumes (to one step further, so the test stays quick)
    status, out, err = run_main(["train", "--resume", run_dir, "--steps", ckpt.step + 1, "--engine", "pure",
                            "--num-samples", 1])
    assert status == 0, err
    assert f"step {ckpt.step + 1:4d} / {ckpt.step + 1:4d}" in out


def test_kill_9_leaves_the_last_good_checkpoint(tiny_txt, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "log.jsonl"
    proc = start_training(tiny_txt, run_dir, log, "--save-every", 1)
    try:
        wait_for_step(proc, 5)
        time.sleep(0.05)  # somewhere in the middle of steps and saves
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    ckpt = rundir.load(run_dir)
    assert ckpt.step >= 4
    assert ckpt.num_steps == 100000

"""The torch engine: the same GPT on PyTorch, held to stated tolerances (it is not exact).

float64 on the CPU: the 1000 golden losses within 1e-12 (relative), the step-0
gradients within 1e-12 of the largest; batches are the mean of their documents'
losses; checkpoints move between torch and the exact engines; `export` writes
the checkpoint's weights; every failure is one line. Without torch these tests
skip, except where MICROGPT_REQUIRE_TORCH=1 (CI), which makes that a failure.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import (assert_one_error_line, load_golden, refused, run_main, run_module, sample_texts, child_env,
                     PACKAGE_PARENT)

if os.environ.get("MICROGPT_REQUIRE_TORCH") == "1":
    import torch  # noqa: F401  (CI: a missing torch fails here, it never skips)
else:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install '.[torch]')")

from microgpt import get_engine, rundir  # noqa: E402
from microgpt.model import Config, document_loss, init_state_dict, parameters  # noqa: E402
from microgpt.run import RunSettings, build_run  # noqa: E402

GOLDEN_REL = 1e-12   # float64 losses against the reference's over 1000 steps
RESUME_REL = 1e-9    # a continuation on torch against the exact engine's, and DDP against one process


def read_losses(log):
    return [r["loss"] for r in map(json.loads, open(log, encoding="utf-8")) if "loss" in r]


def max_rel(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def names_run(engine_name, steps=1000, **settings):
    return build_run(get_engine(engine_name), RunSettings(steps=steps, **settings))


# --- the model ---------------------------------------------------------------------

def test_initial_weights_are_the_scalar_engines_bit_for_bit():
    pure, torch_run = names_run("pure"), names_run("torch")
    model = torch_run.trainer.model
    assert list(model.state_dict()) == list(pure.sd)  # the same names, in the same order
    for name, tensor in model.state_dict().items():
        rows = pure.sd[name]
        assert tuple(tensor.shape) == (len(rows), len(rows[0]))
        assert tensor.tolist() == [[p.data for p in row] for row in rows], name


def test_step0_gradients_match_golden():
    golden = load_golden("names_default_step0_grads.json")
    trainer = names_run("torch").trainer
    idx, targets, lengths = trainer.batch(trainer.documents_at(0))
    _, losses = trainer.model(idx, targets, lengths)
    losses.sum().backward()
    assert abs(losses.item() - golden["loss"]) <= GOLDEN_REL * golden["loss"]
    for name, p in trainer.model.named_parameters():
        want = golden["grads"][name]
        scale = max(abs(g) for row in want for g in row)
        worst = max(abs(a - b) for ra, rb in zip(p.grad.tolist(), want) for a, b in zip(ra, rb))
        assert worst <= 1e-12 * scale, name


def test_golden_1000_steps_within_tolerance(tmp_path):
    """`microgpt train --engine torch` (CPU, float64): the reference's 1000 losses."""
    golden = load_golden("names_default_1000_steps.json")
    log = tmp_path / "log.jsonl"
    status, out, err = run_main(["train", "--engine", "torch", "--log", log, "--num-samples", 0])
    assert status == 0, err
    assert out.splitlines()[0] == "engine: torch, device cpu, dtype float64, 1 thread"
    losses = read_losses(log)
    assert len(losses) == 1000
    assert max_rel(losses, golden["losses"]) <= GOLDEN_REL


def test_batch_loss_is_the_mean_of_its_documents_losses():
    """Four documents of different lengths, padded and masked: their mean loss, as pure computes each."""
    pure, torch_run = names_run("pure"), names_run("torch", batch_size=4)
    trainer = torch_run.trainer
    docs = trainer.documents_at(0)
    assert docs == pure.trainer.docs[:4] and len({len(d) for d in docs}) > 1
    want = sum(document_loss(pure.sd, pure.config, pure.tokenizer.document_tokens(d)).data for d in docs) / 4
    _, loss, _ = trainer.train_step()
    assert abs(loss - want) <= 1e-14 * want
    assert trainer.documents_at(1) == pure.trainer.docs[4:8]  # the next four, in order


def test_padding_does_not_change_a_documents_loss():
    trainer = names_run("torch").trainer
    docs = trainer.docs[:8]
    with torch.no_grad():
        _, together = trainer.model(*trainer.batch(docs))
        alone = [trainer.model(*trainer.batch([d]))[1].item() for d in docs]
    assert max_rel(together.tolist(), alone) <= 1e-14


def test_batch_size_above_1_is_refused_on_scalar_engines():
    line = refused(["train", "--engine", "replay", "--batch-size", 2, "--steps", 1])
    assert "--batch-size 2" in line and "one document a step" in line


@pytest.mark.parametrize("flag,value", [("--device", "cpu"), ("--dtype", "float32"), ("--threads", "2")])
def test_torch_options_are_refused_on_scalar_engines(flag, value):
    assert "--engine torch" in refused(["train", "--engine", "pure", flag, value, "--steps", 1])


def test_float32_batches_train_to_name_like_samples(tmp_path):
    log = tmp_path / "log.jsonl"
    status, out, err = run_main(["train", "--engine", "torch", "--dtype", "float32", "--batch-size", 32,
                                 "--steps", 300, "--num-samples", 20, "--log", log])
    assert status == 0, err
    assert "dtype float32" in out.splitlines()[0] and "batch size: 32 documents a step" in out
    losses = read_losses(log)
    assert sum(losses[-20:]) / 20 < 2.5 < losses[0]  # it learned (3.3 at the start)
    samples = sample_texts(out)
    assert len(samples) == 20 and all(s.isalpha() and s.islower() for s in samples if s)
    assert 3 <= sum(map(len, samples)) / 20 <= 10


def test_bfloat16_trains():
    run = names_run("torch", steps=20)
    run.engine.dtype_name = "bfloat16"  # (the engine's option: autocast over float32 weights)
    trainer = type(run.trainer)(run.engine, run.sd, run.config, run.trainer.docs, run.tokenizer, 20)
    losses = [trainer.train_step()[1] for _ in range(20)]
    assert all(math.isfinite(x) for x in losses) and abs(losses[0] - 3.366) < 0.05


# --- checkpoints: one format for every engine --------------------------------------------

def test_replay_run_resumes_on_torch_within_tolerance(tmp_path):
    first = tmp_path / "first"
    assert run_main(["train", "--engine", "replay", "--steps", 20, "-o", first, "--num-samples", 0])[0] == 0
    logs = {}
    for engine in ("replay", "torch"):
        logs[engine] = tmp_path / f"{engine}.jsonl"
        status, _, err = run_main(["train", "--resume", first, "-o", tmp_path / engine, "--steps", 40,
                                   "--engine", engine, "--log", logs[engine], "--num-samples", 0])
        assert status == 0, err
    replay, torch_losses = read_losses(logs["replay"]), read_losses(logs["torch"])
    assert len(replay) == 20
    assert max_rel(torch_losses, replay) <= RESUME_REL
    assert rundir.load(tmp_path / "torch").step == 40


def test_torch_run_samples_on_replay_and_resumes_there(tmp_path):
    run_dir = tmp_path / "run"
    status, out, err = run_main(["train", "--engine", "torch", "--steps", 30, "-o", run_dir, "--num-samples", 5])
    assert status == 0, err
    on_torch = sample_texts(out)
    for engine in ("replay", "torch"):
        status, out, err = run_main(["sample", "-o", run_dir, "--engine", engine, "--num-samples", 5])
        assert status == 0, err
        # the checkpoint's generator continues, and the probabilities agree to ~1e-16
        assert sample_texts(out) == on_torch
    status, out, err = run_main(["train", "--resume", run_dir, "--steps", 32, "--engine", "replay",
                                 "--num-samples", 0])
    assert status == 0, err


def test_batch_size_is_kept_by_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    assert run_main(["train", "--engine", "torch", "--batch-size", 4, "--steps", 3, "-o", run_dir,
                     "--num-samples", 0])[0] == 0
    assert rundir.load(run_dir).batch_size == 4
    status, out, err = run_main(["train", "--resume", run_dir, "--steps", 4, "--engine", "torch", "--num-samples", 0])
    assert status == 0 and "batch size: 4" in out, err
    line = refused(["train", "--resume", run_dir, "--steps", 5, "--engine", "replay"])
    assert "--batch-size" not in line  # (not given)
    assert "trained with batches of 4" in line and "--engine torch" in line
    assert "differs from the checkpoint's 4" in refused(["train", "--resume", run_dir, "--steps", 5,
                                                         "--engine", "torch", "--batch-size", 2])


def test_a_reference_checkpoint_has_no_batch_size_key(tmp_path):
    run_dir = tmp_path / "run"
    assert run_main(["train", "--engine", "torch", "--steps", 2, "-o", run_dir, "--num-samples", 0])[0] == 0
    obj = json.loads((run_dir / "checkpoint.json").read_text())
    assert "batch_size" not in obj["training"]  # the format of a reference run is unchanged


def test_sigterm_saves_and_resumes(tmp_path):
    import signal
    import time
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "train", "--engine", "torch", "--steps", "100000",
                             "-o", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(), cwd=PACKAGE_PARENT)
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if line.startswith("step    5 /"):
                break
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    ckpt = rundir.load(run_dir)
    assert ckpt.step >= 5
    status, out, err = run_main(["train", "--resume", run_dir, "--steps", ckpt.step + 1, "--engine", "torch",
                                 "--num-samples", 0])
    assert status == 0, err


def test_divergence_is_one_line_and_keeps_a_finite_state(tmp_path):
    status, out, err = run_main(["train", "--engine", "torch", "--steps", 200, "--learning-rate", "1e308",
                                 "-o", tmp_path / "run", "--num-samples", 0])
    assert status == 1
    assert "diverged at step" in assert_one_error_line(err)
    ckpt = rundir.load(tmp_path / "run")  # (the loader refuses non-finite numbers)
    assert ckpt.step < 200


def test_validation_loss_matches_the_scalar_engines(tmp_path):
    args = ["--steps", 5, "--val-fraction", "0.001", "--eval-every", 5, "--num-samples", 0]
    vals = {}
    for engine in ("replay", "torch"):
        status, out, err = run_main(["train", "--engine", engine, *args])
        assert status == 0, err
        vals[engine] = float(out.split("val loss ")[-1].split()[0])
    assert abs(vals["torch"] - vals["replay"]) <= 1e-4  # printed to 4 places: equal there


# --- export --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, names_cache):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    env = {"MICROGPT_CACHE_DIR": str(names_cache)}
    proc = run_module(["train", "--engine", "replay", "--steps", 5, "-o", run_dir, "--num-samples", 0], **env)
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_export_writes_the_checkpoints_weights(trained, tmp_path):
    from safetensors.torch import load_file

    from microgpt.torch_model import GPT, from_safetensors
    out = tmp_path / "model.safetensors"
    status, stdout, err = run_main(["export", "-o", trained, "--out", out])
    assert status == 0, err
    ckpt = rundir.load(trained)
    tensors = load_file(out)
    assert sorted(tensors) == sorted(ckpt.weights)  # (safetensors orders its names)
    for name, rows in ckpt.weights.items():
        assert tensors[name].dtype == torch.float64 and tensors[name].tolist() == rows, name
    model = from_safetensors(str(out))  # the README's three lines
    assert isinstance(model, GPT) and model.config == ckpt.config
    assert model.state_dict()["wte"].tolist() == ckpt.weights["wte"]


def test_the_readmes_three_lines_load_an_export(trained, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    code = readme.split("so an exported file loads in three lines:\n\n```python\n")[1].split("```")[0]
    assert len(code.strip().splitlines()) == 3
    assert run_main(["export", "-o", trained, "--out", tmp_path / "model.safetensors"])[0] == 0
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(code, scope)
    assert scope["model"].state_dict()["lm_head"].tolist() == rundir.load(trained).weights["lm_head"]


def test_export_in_float32(trained, tmp_path):
    from safetensors.torch import load_file
    out = tmp_path / "model32.safetensors"
    assert run_main(["export", "-o", trained, "--out", out, "--dtype", "float32"])[0] == 0
    ckpt = rundir.load(trained)
    t = load_file(out)["lm_head"]
    assert t.dtype == torch.float32
    assert t.tolist() == torch.tensor(ckpt.weights["lm_head"], dtype=torch.float64).float().tolist()


@pytest.mark.parametrize("case", ["missing run", "unwritable out", "directory out", "unknown dtype"])
def test_export_failures_are_one_line(case, trained, tmp_path):
    args = {
        "missing run": ["-o", tmp_path / "nothing", "--out", tmp_path / "m.safetensors"],
        "unwritable out": ["-o", trained, "--out", tmp_path / "no" / "such" / "m.safetensors"],
        "directory out": ["-o", trained, "--out", tmp_path],
        "unknown dtype": ["-o", trained, "--out", tmp_path / "m.safetensors", "--dtype", "float16"],
    }[case]
    refused(["export", *args])
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))  # nothing half-written


@pytest.mark.parametrize("spelling", ["plain", "dotted"])
def test_export_refuses_to_overwrite_the_runs_checkpoint(spelling, trained, monkeypatch):
    monkeypatch.chdir(trained.parent)
    out = {"plain": "run/checkpoint.json", "dotted": "./run/../run/checkpoint.json"}[spelling]
    before = (trained / "checkpoint.json").read_bytes()
    assert "checkpoint" in refused(["export", "-o", "run", "--out", out])
    assert (trained / "checkpoint.json").read_bytes() == before


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_export_refuses_an_out_that_is_not_a_regular_file(kind, trained, tmp_path):
    import stat
    out = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        try:
            os.mknod(out, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a null device of our own
        except PermissionError:
            pytest.skip("making a device node needs root")
    assert "not a regular file" in refused(["export", "-o", trained, "--out", out])
    mode = os.stat(out).st_mode
    assert stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISCHR(mode)  # still there, as it was


def test_export_follows_the_umask_as_checkpoints_do(trained, tmp_path):
    old = os.umask(0o022)
    try:
        assert run_main(["export", "-o", trained, "--out", tmp_path / "m.safetensors"])[0] == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.safetensors").st_mode & 0o777 == 0o644


def test_unknown_dtype_and_missing_gpu_are_one_line():
    assert "--dtype" in refused(["train", "--engine", "torch", "--dtype", "float8", "--steps", 1])
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in refused(["train", "--engine", "torch", "--device", "cuda", "--steps", 1])
    if not torch.backends.mps.is_available():
        assert "--device mps" in refused(["train", "--engine", "torch", "--device", "mps", "--steps", 1])


# --- without torch ---------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["train", "--engine", "torch", "--steps", "1"],
                                  ["export", "-o", "RUN", "--out", "m.safetensors"],
                                  ["bench", "--engines", "torch"]])
def test_without_torch_it_says_how_to_install(argv, tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"  # as if PyTorch were not installed
            "from microgpt.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=child_env(), cwd=tmp_path)
    assert proc.returncode == 2
    line = assert_one_error_line(proc.stderr)
    assert "pip install 'microgpt-arena[torch]'" in line
    assert 'pip install ".[torch]"' in line  # as the README says it


def test_auto_never_picks_torch():
    from microgpt.engine import available_engines
    assert get_engine("auto").name != "torch" and "torch" not in available_engines()


# --- bench -------------------------------------------------------------------------------

def test_bench_shows_torch_beside_replay_with_the_difference():
    status, out, err = run_main(["bench", "--engines", "replay,torch", "--steps", 3, "--warmup", 1, "--repeat", 1])
    assert status == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["replay"], ["torch"])}
    assert set(rows) == {"replay", "torch"}
    diff = float(rows["torch"].split("max rel ")[1].split()[0])
    assert diff <= 1e-14
    assert "torch within" in out


def test_bench_names_only_the_exact_engines_identical():
    status, out, err = run_main(["bench", "--engines", "compiled,replay,torch", "--steps", 1, "--warmup", 0,
                                 "--repeat", 1])
    assert status == 0, err
    same = [line for line in out.splitlines() if "identical (==)" in line]
    assert same == ["losses: identical (==) on all 1 steps across compiled, replay"]  # torch: "within"


# --- on a GPU ------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@cuda
@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-12), ("float32", 1e-4)])
def test_cuda_trains_the_reference_steps(dtype, tolerance, tmp_path):
    golden = load_golden("names_default_20_steps.json")
    log = tmp_path / "log.jsonl"
    status, out, err = run_main(["train", "--engine", "torch", "--device", "cuda", "--dtype", dtype,
                                 "--steps", 20, "--log", log, "--num-samples", 3])
    assert status == 0, err
    assert "device cuda" in out.splitlines()[0]
    assert max_rel(read_losses(log), golden["losses"]) <= tolerance


@cuda
def test_cuda_checkpoint_resumes_on_the_cpu(tmp_path):
    run_dir = tmp_path / "run"
    assert run_main(["train", "--engine", "torch", "--device", "cuda", "--steps", 4, "-o", run_dir,
                     "--num-samples", 0])[0] == 0
    status, _, err = run_main(["train", "--resume", run_dir, "--steps", 6, "--engine", "torch", "--device", "cpu",
                               "--num-samples", 0])
    assert status == 0, err


def test_config_is_the_scalar_models():
    from microgpt import torch_model
    assert torch_model.Config is Config
    model = torch_model.GPT(Config(vocab_size=5, n_layer=2, n_embd=8, block_size=4, n_head=2))
    assert [tuple(p.shape) for p in model.parameters()][:3] == [(5, 8), (4, 8), (5, 8)]
    scalar = init_state_dict(get_engine("pure").Value, model.config)
    assert sum(p.numel() for p in model.parameters()) == len(parameters(scalar))

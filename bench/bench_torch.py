"""The torch engine beside the others: a training step and a sample, at both configurations.

Same groups as bench_engines.py ("train-step default", ...), so the torch row sits in
the engines' tables. Skipped without PyTorch (pip install '.[torch]'), except where
MICROGPT_REQUIRE_TORCH=1 (CI).
"""
import os
import random

import pytest

if os.environ.get("MICROGPT_REQUIRE_TORCH") != "1":
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install '.[torch]')")

from conftest import CONFIGS, SEED  # noqa: E402

from microgpt import get_engine  # noqa: E402
from microgpt.run import RunSettings, build_run  # noqa: E402
from microgpt.train import sample  # noqa: E402


@pytest.fixture
def torch_run(config_name, names_txt):
    run = build_run(get_engine("torch"), RunSettings(input=str(names_txt), seed=SEED, steps=10 ** 9,
                                                     **CONFIGS[config_name]))
    return run


def describe(benchmark, run, config_name, phase):
    benchmark.group = f"{phase} {config_name}"
    benchmark.extra_info.update(engine="torch", config=config_name, params=sum(
        p.numel() for p in run.trainer.model.parameters()))


def test_train_step(benchmark, torch_run, config_name, run_rounds):
    """One training step on a document of the names (the trainer's own, in order): forward, backward, Adam."""
    describe(benchmark, torch_run, config_name, "train-step")
    run_rounds(benchmark, torch_run.trainer.train_step)
    assert torch_run.trainer.step >= 1


def test_sample(benchmark, torch_run, config_name, run_rounds):
    """Sampling one name (temperature 0.5) with the generator reseeded before each round."""
    describe(benchmark, torch_run, config_name, "sample")
    sampler = torch_run.engine.Sampler(torch_run.sd, torch_run.config)

    def draw():
        return sample(torch_run.engine, torch_run.sd, torch_run.config, torch_run.tokenizer, sampler=sampler)

    text = run_rounds(benchmark, draw, setup=lambda: random.seed(SEED))
    assert set(text) <= set(torch_run.tokenizer.chars)

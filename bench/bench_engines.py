"""The engines side by side: forward, backward, optimizer, a training step, a sample.

    pytest bench/ --benchmark-only          (see bench/pytest.ini for more)

Each test runs on every engine built here at the default and at the large
configuration (conftest.py); its group ("train-step default", say) puts the
engines in one table. Graphs are built and released outside the timed part
whenever the phase being timed is not the one that builds them.
"""
import random

import pytest

from microgpt.bench.measure import count_nodes
from microgpt.train import Trainer, sample

LEARNING_RATE = 0.01
_nodes_cache = {}


def describe(benchmark, workload, phase):
    benchmark.group = f"{phase} {workload.config_name}"
    benchmark.extra_info.update(engine=workload.engine.name, config=workload.config_name,
                                doc=workload.doc, positions=len(workload.tokens) - 1,
                                params=len(workload.params))


def graph_nodes(workload):
    """Nodes one forward of the fixed document creates (counted once per engine and config;
    the pure engine at the large configuration is not counted again: it is the same graph)."""
    key = (workload.engine.name, workload.config_name)
    if key not in _nodes_cache and not workload.slow:
        _nodes_cache[key] = count_nodes(workload.engine, workload.loss)
    return _nodes_cache.get(key)


def test_forward(benchmark, workload, graphs, run_rounds):
    """Graph building: one document's loss (every position's logits, softmax, -log p)."""
    describe(benchmark, workload, "forward")
    benchmark.extra_info["nodes"] = graph_nodes(workload)

    def build():
        graphs.keep = workload.loss()

    run_rounds(benchmark, build, setup=graphs.open, slow=workload.slow)
    assert graphs.keep.data > 0


def test_backward(benchmark, workload, graphs, run_rounds):
    """Backward from the loss, in the reference's order, over a freshly built graph."""
    describe(benchmark, workload, "backward")

    def setup():
        graphs.open()
        workload.zero_grads()
        graphs.keep = workload.loss()
        return (graphs.keep,), {}

    run_rounds(benchmark, lambda loss: loss.backward(), setup=setup, slow=workload.slow)
    assert any(p.grad != 0 for p in workload.params)


@pytest.mark.no_graph
def test_optimizer_step(benchmark, workload, run_rounds):
    """Adam over every parameter, with fixed nonzero gradients set before each round."""
    describe(benchmark, workload, "optimizer")
    rng = random.Random(workload.seed)
    grads = [rng.gauss(0, 0.01) for _ in workload.params]
    optimizer = workload.optimizer()

    def setup():
        for p, g in zip(workload.params, grads):
            p.grad = g

    run_rounds(benchmark, lambda: optimizer.step(LEARNING_RATE, 0), setup=setup)
    assert all(p.grad == 0 for p in workload.params[:10])


def test_train_step(benchmark, workload, run_rounds):
    """One full training step, as 'microgpt train' runs it: forward, backward, Adam, release."""
    describe(benchmark, workload, "train-step")
    trainer = Trainer(workload.engine, workload.sd, workload.config, [workload.doc], workload.tokenizer,
                      num_steps=10 ** 9, learning_rate=LEARNING_RATE)
    run_rounds(benchmark, trainer.train_step, slow=workload.slow)
    assert trainer.step >= 1


def test_sample(benchmark, workload, run_rounds):
    """Sampling one name (temperature 0.5) with the generator reseeded before each round."""
    describe(benchmark, workload, "sample")

    def draw():
        return sample(workload.engine, workload.sd, workload.config, workload.tokenizer)

    text = run_rounds(benchmark, draw, setup=lambda: random.seed(workload.seed), slow=workload.slow)
    if not workload.slow:  # every round drew the same name from the same generator state
        random.seed(workload.seed)
        assert text == draw()
    assert set(text) <= set(workload.tokenizer.chars) and len(text) <= workload.config.block_size

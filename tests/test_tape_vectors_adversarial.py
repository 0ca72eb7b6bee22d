"""Adversarial differential checks of the replay's vector instructions (runs,
strided groups, lanes, paired positions) against the model code, with `==`:
odd shapes (one head, head_dim 1, block 1 or 2, a document shorter than the
recording, an odd count of positions), and a run whose operation overflows."""
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from microgpt import available_engines
from microgpt import model
from test_tape import losses_and_weights, trainer
from test_tape_vectors import fails_as_compiled

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

ALPHABET = "abcdefghij"


@st.composite
def shapes(draw):
    n_head = draw(st.integers(1, 4))
    head_dim = draw(st.integers(1, 6))
    n_embd = n_head * head_dim
    if n_embd < 4:
        n_embd, head_dim = n_head * (-(-4 // n_head)), -(-4 // n_head)
    block = draw(st.integers(1, 9))
    n_layer = draw(st.integers(1, 3))
    # documents of lengths 1..block+2 (longer ones are cut at the block), shuffled
    lengths = draw(st.lists(st.integers(1, block + 2), min_size=3, max_size=8))
    seed = draw(st.integers(0, 99))
    rng = random.Random(seed)
    docs = ["".join(rng.choice(ALPHABET) for _ in range(k)) for k in lengths]
    docs.append(ALPHABET)  # every letter in the vocabulary
    return dict(n_layer=n_layer, n_embd=n_embd, block_size=block, n_head=n_head), docs, seed


@settings(max_examples=int(__import__("os").environ.get("MICROGPT_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=list(HealthCheck))
@given(shapes())
def test_replay_equals_the_model_code_on_odd_shapes(case):
    config, docs, seed = case
    steps = len(docs) + 2
    replay = trainer("replay", docs=docs, seed=seed, **config)
    compiled = trainer("compiled", docs=docs, seed=seed, **config)
    assert losses_and_weights(replay, steps) == losses_and_weights(compiled, steps)
    assert replay.document_loss.model_steps == 0


@pytest.mark.parametrize("n_embd,n_head", [(4, 4), (5, 1), (6, 3), (12, 4), (24, 4), (9, 3)])
@pytest.mark.parametrize("block", [1, 2, 3, 9])
def test_head_shapes_and_short_blocks_replay_exactly(n_embd, n_head, block):
    docs = ["abcdefghij"[:k] for k in range(1, 11)] * 2
    random.Random(block).shuffle(docs)
    config = dict(n_layer=1 + block % 3, n_embd=n_embd, block_size=block, n_head=n_head)
    replay, compiled = trainer("replay", docs=docs, **config), trainer("compiled", docs=docs, **config)
    assert losses_and_weights(replay, len(docs)) == losses_and_weights(compiled, len(docs))


@pytest.mark.parametrize("sign", [1000.0, -1000.0])
def test_a_log_that_fails_in_a_runs_last_slot_raises_as_the_model_code_does(monkeypatch, sign):
    # each logit's (val * val * -1.0 + 10.0).log(): a run whose last slot is the
    # log; with a logit made large, an earlier slot has written every repetition
    # before the log of a negative number fails, and the run is computed again in order
    softmax = model.softmax

    def softmax_of_logs(logits):
        return softmax([(val * val * -1.0 + 10.0).log() for val in logits])

    monkeypatch.setattr(model, "softmax", softmax_of_logs)
    fails_as_compiled(dict(n_layer=1, n_embd=12, block_size=7, n_head=3), 3, sign, Exception)


def _pows(logits):
    return [(v * v + 1.0) ** -0.5 + v for v in logits]


def _softplus(logits):
    # a period-4 pattern: a product, an exp, a sum, a log
    return [((v * 0.1).exp() + 1.0).log() for v in logits]


@pytest.mark.parametrize("variant", [_pows, _softplus])
@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=8, block_size=5, n_head=2),
                                    dict(n_layer=2, n_embd=12, block_size=9, n_head=3)])
def test_model_code_variants_with_unusual_runs_replay_exactly(monkeypatch, variant, config):
    softmax = model.softmax
    monkeypatch.setattr(model, "softmax", lambda logits: softmax(variant(logits)))
    docs = ["abcdefghij"[:k] for k in range(1, 11)]
    random.Random(5).shuffle(docs)
    replay, compiled = trainer("replay", docs=docs, **config), trainer("compiled", docs=docs, **config)
    assert losses_and_weights(replay, len(docs) + 3) == losses_and_weights(compiled, len(docs) + 3)
    assert replay.document_loss.model_steps == 0
    assert replay.document_loss.tape.counts(replay.document_loss.tape.n_pos)["forward_runs"] > 0


@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=4, block_size=3, n_head=4),
                                    dict(n_layer=2, n_embd=12, block_size=7, n_head=3),
                                    dict(n_layer=3, n_embd=8, block_size=9, n_head=1)])
def test_a_node_by_node_recording_replays_its_vector_instructions_exactly(monkeypatch, config):
    # the recording made node by node (as when a compact one is refused): its
    # chains' inner nodes exist, the runs, lanes and paired vectors are planned over them
    from microgpt import replay as replay_module
    record_once = replay_module.record_once
    monkeypatch.setattr(replay_module, "record_once",
                        lambda *args: record_once(*args[:-1], False) if args[-1] else (None, "node by node only"))
    docs = ["abcdefghij"[:k] for k in range(1, 11)] * 2
    random.Random(11).shuffle(docs)
    replay, compiled = trainer("replay", docs=docs, **config), trainer("compiled", docs=docs, **config)
    assert losses_and_weights(replay, len(docs)) == losses_and_weights(compiled, len(docs))
    runner = replay.document_loss
    assert runner.refused is None and runner.model_steps == 0
    c = runner.tape.counts(runner.tape.n_pos)
    assert c["forward_runs"] > 0 and c["pulls_in_lanes"] > 0

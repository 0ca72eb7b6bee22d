"""The tape's vector instructions: a vector's elementwise work as one run, four
attention logits read at constant steps, a vector's gradients in lanes, a
matrix's vectors' gradients several positions at once. Each is
used where the model has the shape (the tape's counts say so), and a replay that
runs them gives the model code's floats, bit for bit: losses, weights after Adam,
and an operation that fails inside a run raises as the model code does.
"""

import pytest

from microgpt import available_engines
from microgpt import model
from test_tape import DOCS, every_length_replays_exactly, replayed_as_compiled, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

LONG_DOCS = [" ".join(DOCS[i:i + 4]) for i in range(0, len(DOCS), 2)]  # lines longer than the block
CONFIGS = [dict(), dict(n_layer=2, n_embd=32, block_size=16, n_head=4)]


def recorded(config, docs=DOCS):
    t = trainer("replay", docs=docs, **config)
    t.train_step()
    tape = t.document_loss.tape
    return t, tape.counts(tape.n_pos)


@pytest.mark.parametrize("config", CONFIGS)
def test_a_vectors_elementwise_work_runs_as_runs(config):
    # a norm's products, a residual's sums, relu, a softmax's pieces: most of the
    # instructions that are not sums of products are in runs
    _, c = recorded(config)
    assert c["forward_runs"] > 0
    assert c["forward_in_runs"] > 10 * c["forward_runs"]
    assert c["forward_in_runs"] > c["forward"] // 2


@pytest.mark.parametrize("config", CONFIGS)
def test_attention_logits_are_read_at_constant_steps(config):
    _, c = recorded(config)
    assert c["forward_strided"] > 0
    assert c["forward_side_by_side"] >= c["forward_strided"]


@pytest.mark.parametrize("config", CONFIGS)
def test_a_vectors_gradients_are_summed_in_lanes(config):
    _, c = recorded(config)
    assert 0 < c["pulls_in_lanes"] <= c["pulls_side_by_side"]


@pytest.mark.parametrize("config", CONFIGS)
def test_attention_weights_gradients_are_taken_with_their_softmax_rows(config):
    # each weight's gradient sums v_t[j] * g(output j): taken with its head's softmax row
    # (test_attention_rows.py; the strided lists where a row is not, tested there)
    t, c = recorded(config)
    cfg = t.config
    assert c["attention_rows"] == cfg.n_layer * cfg.n_head * t.document_loss.tape.n_pos
    assert c["pulls_strided"] == 0


@pytest.mark.parametrize("config", [dict(n_layer=2, n_embd=32, block_size=16, n_head=4)])
def test_a_matrix_reads_vectors_gradients_run_two_positions_at_once(config):
    # the backward of a level starts with the vector its matrix read, every position's,
    # eight, four (or two) positions sharing the matrix's weights
    t, c = recorded(config, docs=LONG_DOCS)
    assert c["vectors_paired"] > 0 and c["vectors_paired"] % 2 == 0
    assert t.document_loss.tape.counts(1)["vectors_paired"] == 0  # one position: nothing to pair


@pytest.mark.parametrize("config", CONFIGS)
def test_a_replay_with_vector_instructions_equals_the_model_code(config):
    replay = replayed_as_compiled(12, docs=LONG_DOCS, **config)
    runner = replay.document_loss
    assert runner.model_steps == 0 and runner.tape.counts(runner.tape.n_pos)["forward_runs"] > 0


def test_every_length_replays_the_runs_and_lanes_exactly():
    # documents of every length up to the block: a replay of fewer positions than
    # recorded stops its runs and lanes at its last position
    every_length_replays_exactly("abcdefghijklmnop", 3, n_layer=2, n_embd=16, block_size=16, n_head=4)


def softmax_unshifted(logits):
    """model.softmax without its max subtracted: a large logit overflows its exp"""
    exps = [(val * 1.0).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]


def test_an_exp_that_overflows_inside_a_run_raises_as_the_model_code_does(monkeypatch):
    # a softmax without its max subtracted: each logit's (val * 1.0).exp() is a run
    # (a product, an exp); logits made large overflow an exp partway through it
    monkeypatch.setattr(model, "softmax", softmax_unshifted)
    # logit 5 made about 1000 times the norm's entries' sum
    fails_as_compiled(dict(n_layer=1, n_embd=16, block_size=16, n_head=4), 5, 1000.0, OverflowError)


def fails_as_compiled(config, row, value, error):
    """Three steps on replay (its runs used, no step on the model code) and on compiled; then
    lm_head's row `row` set to value: the next step fails alike on both (the error's type and
    message, and the weights it leaves)."""
    outcomes = []
    for name in ("replay", "compiled"):
        t = trainer(name, **config)
        losses = [t.train_step()[1] for _ in range(3)]
        if name == "replay":
            assert t.document_loss.tape.counts(t.document_loss.tape.n_pos)["forward_runs"] > 0
            assert t.document_loss.model_steps == 0
        for p in t.sd["lm_head"][row]:
            p.data = value
        with pytest.raises(error) as raised:
            t.train_step()
        outcomes.append((losses, type(raised.value), str(raised.value), [p.data for p in t.params]))
    assert outcomes[0] == outcomes[1]

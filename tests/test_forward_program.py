"""The replayed forward's program (records in level order, sums read from first
nodes and steps) and its panels (a level's matrices over every position at
once): bit for bit the compiled engine's numbers where the build finds their
shapes, and model code of other shapes keeps the instruction path (or matrix
rows position by position), still exact."""
import random

import pytest

from microgpt import available_engines, model
from microgpt.sampling import sample
from test_tape import losses_and_weights, replayed_as_compiled, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

LONG = ["".join(random.Random(k).choice("abcdefghij") for _ in range(40)) for k in range(4)] + ["abcdefghij"]


def samples(t):
    random.seed(5)
    return [sample(t.engine, t.sd, t.config, t.tokenizer, temperature=temp, prefix=pre)
            for temp in (0.6, 1.4) for pre in ("", "ab")]


def counts(t):
    tape = t.document_loss.tape
    return tape.counts(tape.n_pos)


@pytest.mark.parametrize("config", [dict(n_layer=2, n_embd=32, block_size=32, n_head=2),
                                    dict(n_layer=2, n_embd=32, block_size=32, n_head=4)])
def test_the_forward_program_and_panels_replay_exactly(config):
    replay, compiled = trainer("replay", docs=LONG, **config), trainer("compiled", docs=LONG, **config)
    assert losses_and_weights(replay, 6) == losses_and_weights(compiled, 6)
    assert replay.document_loss.model_steps == 0
    c = counts(replay)
    assert c["forward_records"] > 0 and c["forward_by_steps"] > 0
    assert c["matrix_panels"] > 0
    assert samples(replay) == samples(compiled)  # the sampler's forward-only tapes: the same code


# A head's logits, four or sixteen keys a record, each logit times 1 / sqrt(head_dim)
# in the same record (heads of 16 or 8 dimensions; rows of 1 to 32 keys: records of
# one group of four and of four groups, and keys left over that take their own path)
@pytest.mark.parametrize("config", [dict(n_layer=2, n_embd=32, block_size=32, n_head=2),
                                    dict(n_layer=1, n_embd=32, block_size=21, n_head=4)])
def test_logits_scaled_in_their_sums_records_replay_exactly(config):
    replay, compiled = trainer("replay", docs=LONG, **config), trainer("compiled", docs=LONG, **config)
    assert losses_and_weights(replay, 4) == losses_and_weights(compiled, 4)
    c = counts(replay)
    assert c["forward_scaled"] > 0 and c["forward_scaled"] % 4 == 0 and c["forward_records"] > 0
    assert samples(replay) == samples(compiled)


# The panels with eight lanes a register (AVX-512, where the processor has it;
# else the AVX2 or plain build, and these are the same checks of those): units of
# 16 rows run eight rows at a time, units of 4 rows four at a time (n_embd 20: one
# of each a matrix; 12: only fours), and a last block of positions part full
@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=64, block_size=12, n_head=4),
                                    dict(n_layer=2, n_embd=20, block_size=11, n_head=2),
                                    dict(n_layer=1, n_embd=12, block_size=9, n_head=2)])
def test_wide_panels_eight_or_four_rows_replay_exactly(config):
    replay, compiled = trainer("replay", docs=LONG, **config), trainer("compiled", docs=LONG, **config)
    assert losses_and_weights(replay, 4) == losses_and_weights(compiled, 4)
    assert replay.document_loss.model_steps == 0
    assert counts(replay)["matrix_panels"] > 0
    assert samples(replay) == samples(compiled)


def test_the_forward_program_at_4_64_64_replays_exactly():
    docs = ["".join(random.Random(k).choice("abcdefghijklmnop") for _ in range(70)) for k in range(2)]
    config = dict(n_layer=4, n_embd=64, block_size=64)
    replay = replayed_as_compiled(2, docs=docs, **config)
    c = counts(replay)
    assert c["forward_by_steps"] > 0 and c["matrix_panels"] > 0


def rmsnorm_odd_order(x):
    # the sum of squares over the even entries, then the odd: a chain whose products do not step by one constant
    order = list(range(0, len(x), 2)) + list(range(1, len(x), 2))
    ms = sum(x[i] * x[i] for i in order) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def linear_with_products_between(x, w):
    return [model.dot(wo, x) * 1.0 for wo in w]


CONFIG = dict(n_layer=2, n_embd=16, block_size=12, n_head=2)


def test_chains_without_constant_steps_keep_their_lists_exactly(monkeypatch):
    plain = trainer("replay", docs=LONG, **CONFIG)
    losses_and_weights(plain, 1)
    monkeypatch.setattr(model, "rmsnorm", rmsnorm_odd_order)
    replay, compiled = trainer("replay", docs=LONG, **CONFIG), trainer("compiled", docs=LONG, **CONFIG)
    assert losses_and_weights(replay, 4) == losses_and_weights(compiled, 4)
    assert replay.document_loss.model_steps == 0
    c, p = counts(replay), counts(plain)
    assert 0 < c["forward_by_steps"] < p["forward_by_steps"]  # the norms' chains read from their lists
    assert samples(replay) == samples(compiled)


def test_a_step_without_levels_keeps_the_instruction_path_exactly(monkeypatch):
    # each row's sum times 1.0: the matrices' groups alternate with other work, the step
    # is not cut into levels, and neither a program nor panels are planned
    monkeypatch.setattr(model, "linear", linear_with_products_between)
    replay, compiled = trainer("replay", docs=LONG, **CONFIG), trainer("compiled", docs=LONG, **CONFIG)
    assert losses_and_weights(replay, 4) == losses_and_weights(compiled, 4)
    assert replay.document_loss.model_steps == 0
    c = counts(replay)
    assert c["forward_records"] == 0 and c["matrix_panels"] == 0 and c["forward_side_by_side"] > 0
    assert samples(replay) == samples(compiled)


def softmax_in_two_runs(logits):
    # the exps in two halves with another operation between: the second half's
    # run starts with a (val - max_val) that takes the max found before it (the
    # run's slot says so from the build; the instructions are not read again)
    max_val = model.max_data(logits)
    k = max(1, len(logits) // 2)
    exps = [(val - max_val).exp() for val in logits[:k]]
    bridge = exps[0] * 1.0
    exps += [(val - max_val).exp() for val in logits[k:]]
    total = sum(exps) + bridge
    return [e / total for e in exps]


def test_a_run_whose_first_max_was_found_before_it_replays_exactly(monkeypatch):
    monkeypatch.setattr(model, "softmax", softmax_in_two_runs)
    config = dict(n_layer=1, n_embd=16, block_size=24, n_head=2)
    replay, compiled = trainer("replay", docs=LONG, **config), trainer("compiled", docs=LONG, **config)
    assert losses_and_weights(replay, 4) == losses_and_weights(compiled, 4)
    assert replay.document_loss.model_steps == 0 and counts(replay)["forward_records"] > 0
    assert samples(replay) == samples(compiled)

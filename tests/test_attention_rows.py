"""A head's softmax row, its backward taken whole (src/tape/attention.c): at one
position, from the attention weights down to the logits, in one call, the
weights' gradients in lanes of keys. The build takes it for every head at every
position where the model has the reference's shape (the tape's counts say so),
and the replay gives the compiled engine's floats, bit for bit; a softmax of
another shape keeps the entries' own lists, still exact."""
import random

import pytest

from microgpt import available_engines, model
from test_tape import every_length_replays_exactly, replayed_as_compiled

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

LONG = ["".join(random.Random(k).choice("abcdefghij") for _ in range(50)) for k in range(3)]

# head dims 4, 16 and 32 (the weights' pulls); blocks of fewer keys than a register's
# lanes, and of more than 32 (a second chunk of four registers)
CONFIGS = [dict(n_layer=1, n_embd=16, block_size=6, n_head=4),
           dict(n_layer=2, n_embd=32, block_size=24, n_head=2),
           dict(n_layer=1, n_embd=64, block_size=40, n_head=2)]


def rows(t, n=None):
    tape = t.document_loss.tape
    return tape.counts(n or tape.n_pos)["attention_rows"]


@pytest.mark.parametrize("config", CONFIGS)
def test_every_heads_softmax_row_is_taken_and_replays_exactly(config):
    replay = replayed_as_compiled(5, docs=LONG, **config)
    assert replay.document_loss.model_steps == 0
    heads = config["n_layer"] * config["n_head"]
    assert rows(replay) == heads * replay.document_loss.tape.n_pos  # one a head, a position
    assert rows(replay, 1) == heads
    # every row writes only its logits' gradients: its adds' other children are the
    # derived maxima, its products' the scale, its first sum's the 0 (attention_unread.c)
    counts = replay.document_loss.tape.counts(replay.document_loss.tape.n_pos)
    assert counts["attention_rows_lean"] == rows(replay)
    # and reads its logits' and exps' nodes from first nodes and steps (its one-key rows too)
    assert counts["attention_rows_stepped"] == rows(replay)


def test_documents_shorter_than_the_recording_replay_their_rows_exactly():
    # a replay of fewer positions starts at its last position's rows (their values copied there)
    replay = every_length_replays_exactly("abcdefghijkl", 4, n_layer=2, n_embd=16, block_size=12, n_head=2)
    assert rows(replay) > 0


def softmax_scaled_total(logits):
    # the total times 1.0: the weights' pows no longer read the sum of the exps
    max_val = model.max_data(logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps) * 1.0
    return [e / total for e in exps]


def test_a_softmax_of_another_shape_keeps_the_entries_lists_exactly(monkeypatch):
    monkeypatch.setattr(model, "softmax", softmax_scaled_total)
    config = CONFIGS[1]
    replay = replayed_as_compiled(4, docs=LONG, **config)
    assert replay.document_loss.model_steps == 0
    tape = replay.document_loss.tape
    c = tape.counts(tape.n_pos)
    assert c["attention_rows"] == 0 and c["pulls_strided"] > 0  # the weights by their strided lists
    assert c["values_from_rows"] == 0  # (no rows to sum them)


@pytest.mark.parametrize("config", CONFIGS[1:])
def test_a_heads_values_gradients_run_sixteen_lanes_from_one_list_exactly(config):
    # each value v_t[j] sums w(p, t) * g(output_p[j]) over later positions p: a head's
    # sixteen entries (four heads' at once) read one list, their parents side by side
    replay = replayed_as_compiled(5, docs=LONG, **config)
    tape = replay.document_loss.tape
    values = config["n_layer"] * config["n_embd"] * tape.n_pos  # every position's values
    assert tape.counts(tape.n_pos)["shifted_in_runs"] >= values


@pytest.mark.parametrize("config", CONFIGS[1:])
def test_a_heads_values_gradients_are_summed_by_its_rows_exactly(config):
    # the row of position p adds w(p, t) g(output_p[j]) to value v_t[j]'s sum as it runs
    # (attention_values.c), the last position's row first as each value's list; every
    # position's values but the last's (a list of one pull) are copied from those sums
    replay = replayed_as_compiled(5, docs=LONG, **config)
    tape = replay.document_loss.tape
    assert tape.counts(tape.n_pos)["values_from_rows"] >= config["n_layer"] * config["n_embd"] * (tape.n_pos - 1)


def test_documents_shorter_than_the_recording_sum_their_values_from_their_rows_exactly():
    # a replay of n positions begins each head's sums at its row of position n - 1 (16
    # pulls a head: its values run sixteen lanes from one list)
    replay = every_length_replays_exactly("abcdefghijkl", 5, n_layer=2, n_embd=32, block_size=12, n_head=2)
    assert replay.document_loss.tape.counts(4)["values_from_rows"] >= 2 * 32 * 3


@pytest.mark.parametrize("config", CONFIGS)
def test_a_heads_queries_and_keys_gradients_are_summed_by_its_rows_exactly(config):
    # the row of position p sums its query q_p[j] over its logits, last key first, and
    # adds g(dot(p, t)) q_p[j] to key k_t[j]'s sum, the last position's row first, as
    # their lists (attention_keys.c); every query and every key but the last
    # position's (a list of one pull each) skips its own list; and nothing else reads
    # the logits' gradients of any row but the last position's, so they are not written
    replay = replayed_as_compiled(5, docs=LONG, **config)
    tape = replay.document_loss.tape
    n, heads = tape.n_pos, config["n_layer"] * config["n_head"]
    c = tape.counts(n)
    assert c["keys_from_rows"] == config["n_layer"] * config["n_embd"] * (2 * n - 1)
    assert c["logits_unwritten"] == heads * (n - 1)


def test_documents_shorter_than_the_recording_sum_their_queries_and_keys_from_their_rows_exactly():
    # a replay of n positions begins each key's sum at its row of position n - 1 (its list
    # skips the later positions' logits), and that row writes position n - 1's key,
    # whose list is longer than one pull there: the first four positions' queries and
    # keys are all the rows' (the recording's last position's keys lie past them)
    replay = every_length_replays_exactly("abcdefghijkl", 6, n_layer=2, n_embd=32, block_size=12, n_head=2)
    assert replay.document_loss.tape.counts(4)["keys_from_rows"] == 2 * 32 * (4 + 4)

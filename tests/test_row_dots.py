"""A matrix row's sum recorded as a row: its weights (consecutive leaves) as one
entry, w0, and only the x's listed (src/arena.h arena_push_dot, TAG_ROW_DOT),
half the edges of the pairs w0, x0, w1, x1, ... . The value is the plain sum's,
bit for bit; the node reads as its pairs; sums whose weights are not consecutive
leaves, and sums outside a recording, keep the pairs; a tape built from rows
replays exactly, and one whose row weights are not the parameters in order is
refused (the step is recorded again node by node).
"""
import random

import pytest

from microgpt import available_engines, get_engine, model, replay

from support import TEN_NAMES, bits, small_trainer, train_bits

if "replay" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

from microgpt import _engine  # noqa: E402  (built: the replay engine is)


def recorded_sum(arena, w, x):
    """model.dot(w, x) while arena records compactly: (value, edges appended)."""
    edges = arena.num_edges
    _engine.begin_recording(arena, True)
    try:
        s = model.dot(w, x)
    finally:
        _engine.end_recording(arena)
    return s, arena.num_edges - edges


def test_consecutive_weights_are_one_entry_and_read_as_pairs():
    arena = _engine.Arena()
    rng = random.Random(7)
    w = [arena.value(v) for v in [-0.0, 1.5, 1e16, 0, rng.uniform(-1, 1), -1e16, 3]]  # consecutive leaves
    x = [arena.value(v) for v in [2.0, -0.0, 1.0, -1.5, rng.uniform(-1, 1), 1.0, 0.1]]
    for n in range(1, len(w) + 1):
        with arena.graph():
            plain = sum(wi * xi for wi, xi in zip(w[:n], x[:n]))
            s, edges = recorded_sum(arena, w[:n], x[:n])
            assert bits(s.data) == bits(plain.data)
            assert edges == n + 1  # w0 and the n x's
            assert s._children == tuple(v for pair in zip(w[:n], x[:n]) for v in pair)
            assert s._local_grads == tuple(v.data for pair in zip(x[:n], w[:n]) for v in pair)


def test_other_weights_and_sums_outside_a_recording_keep_the_pairs():
    arena = _engine.Arena()
    w = [arena.value(v) for v in [0.5, -1.25, 2.0, 1e-3]]
    x = [arena.value(v) for v in [1.5, 0.25, -3.0, 7.0]]
    for ws, xs in [(w[::-1], x), (w[:2] + w[3:], x[:3])]:  # leaves, not consecutive
        with arena.graph():
            plain = sum(wi * xi for wi, xi in zip(ws, xs))
            s, edges = recorded_sum(arena, ws, xs)
            assert bits(s.data) == bits(plain.data) and edges == 2 * len(xs)
            assert s._children == tuple(v for pair in zip(ws, xs) for v in pair)
    with arena.graph():  # products as weights: not leaves, though consecutive nodes
        ws = [wi * 1.0 for wi in w]
        s, edges = recorded_sum(arena, ws, x)
        assert edges == 2 * len(x) and bits(s.data) == bits(sum(a * b for a, b in zip(ws, x)).data)
    with arena.graph():  # a sampler's compact forward (nothing recorded) keeps the pairs
        was = _engine.set_compact(arena, True)
        try:
            edges = arena.num_edges
            s = model.dot(w, x)
            assert arena.num_edges - edges == 2 * len(x)
        finally:
            _engine.set_compact(arena, was)


def test_rows_replay_as_the_compiled_engine_computes():
    losses, weights, t = train_bits("replay")
    assert (losses, weights) == train_bits("compiled")[:2]
    assert t.document_loss.refused is None and t.document_loss.model_steps == 0


def test_rows_whose_weights_are_not_the_parameters_in_order_are_refused(monkeypatch):
    # the optimizer's parameters listed in another order than the arena's: a row's
    # weights are consecutive leaves, not consecutive parameters; the compact
    # recording is refused and the step is recorded node by node, exactly
    made = []
    once = replay.record_once

    def noting(*args):
        tape, why = once(*args)
        made.append((args[-1], why))
        return tape, why

    monkeypatch.setattr(replay, "record_once", noting)
    t = small_trainer("replay")
    dl = t.document_loss
    dl.params = dl.params[::-1]
    dl.table = replay.token_table(dl.sd)
    dl.table = (len(dl.params) - dl.table[0] - dl.table[1] * dl.table[2], dl.table[1], dl.table[2])
    tokens = t.tokenizer.document_tokens(TEN_NAMES[3])[:9]
    with get_engine("replay").graph():
        tape, why = dl.make_tape(tokens, 8)
    assert made[0] == (True, "a compact sum's weights are not consecutive parameters")
    assert made[1][0] is False

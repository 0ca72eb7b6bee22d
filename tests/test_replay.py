"""Replay: recompute a recorded graph from new leaf values, in C, bit for bit.

The arena keeps each node's op, constant operand and children in order, so
the forward pass can be rerun without Python. A replay must give the very
floats that building the same graph again gives.
"""
import math
import random

import pytest

engine_mod = pytest.importorskip("microgpt._engine")
from microgpt.model import linear, rmsnorm  # noqa: E402


def mlp_block(x, w1, w2):
    # a GPT MLP block: no constant here is derived from data, so a replay is exact
    h = rmsnorm(x)
    h = [v.relu() for v in linear(h, w1)]
    out = linear(h, w2)
    return sum(v * v for v in out) / len(out) + sum(xi.exp() for xi in x).log()


def build(arena, rng, n_in=6, n_hidden=12):
    x = [arena.value(rng.gauss(0, 1)) for _ in range(n_in)]
    w1 = [[arena.value(rng.gauss(0, 0.5)) for _ in range(n_in)] for _ in range(n_hidden)]
    w2 = [[arena.value(rng.gauss(0, 0.5)) for _ in range(n_hidden)] for _ in range(n_in)]
    return x, w1, w2


@pytest.mark.parametrize("seed", range(5))
def test_replay_equals_rebuild(seed):
    rng = random.Random(seed)
    arena = engine_mod.Arena()
    x, w1, w2 = build(arena, rng)
    leaves = x + [p for row in w1 + w2 for p in row]
    mark = arena.mark()
    recorded = mlp_block(x, w1, w2)
    n_recorded = len(arena) - mark

    # new leaf values, then the recorded graph replayed from them
    for p in leaves:
        p.data = rng.gauss(0, 1)
    arena.replay(mark)
    recorded.backward()
    replayed_data = arena.column("data")[mark:mark + n_recorded]
    replayed_lg = arena.column("local_grad")
    replayed_grads = [p.grad for p in leaves]
    replayed_loss = recorded.data

    # the same graph built anew from the same leaf values
    for p in leaves:
        p.grad = 0.0
    start = len(arena)
    rebuilt = mlp_block(x, w1, w2)
    assert len(arena) - start == n_recorded
    rebuilt.backward()
    assert arena.column("data")[start:start + n_recorded] == replayed_data
    e0, e1 = arena.column("child_start")[mark], arena.column("child_start")[start]
    n_edges = e1 - e0
    assert replayed_lg[e0:e1] == arena.column("local_grad")[e1:e1 + n_edges]
    assert rebuilt.data == replayed_loss
    assert [p.grad for p in leaves] == replayed_grads
    assert replayed_loss != 0.0


def test_replay_raises_like_the_operation():
    arena = engine_mod.Arena()
    a = arena.value(2.0)
    mark = arena.mark()
    log_a = a.log()
    a.data = -1.0
    with pytest.raises(ValueError, match="^math domain error$"):  # what math.log(-1.0) says
        arena.replay(mark)
    # the failed node was not overwritten, and nothing was appended or released
    assert log_a.data == math.log(2.0)
    assert len(arena) == mark + 1
    n = len(arena)
    with pytest.raises(ValueError, match=rf"^start {n + 1} is outside the arena \(0\.\.{n}\)$"):
        arena.replay(n + 1)

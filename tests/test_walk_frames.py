"""The backward walk's frames (src/backward.c): a node gets a frame only when the
walk goes into a child; an add's or a multiply's second edge is taken from its
frame; a node of one child or of three or more keeps its next edge in the frame;
the accumulation takes the grad of the node after its last child from a register.

Random graphs mixing all of these (custom nodes of 0 to 5 children, a child
listed more than once, roots anywhere in the graph, backward again and again)
must give the pure engine's grads: the same bits and the same type. Chains deeper
than any recursion of custom nodes of three children and of one check the
frames at depth against numbers known in closed form.
"""
import random

import pytest
from support import same_float
from test_equivalence import number_type

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

PURE = get_engine("pure")
COMPILED = get_engine("compiled")


def random_graph(engine, seed, n):
    """n nodes over a few leaves, the same program on either engine."""
    rng = random.Random(seed)
    pool = [engine.Value(rng.choice([2, -1, 0.5, 1.25, -0.75])) for _ in range(5)]
    for _ in range(n):
        kind = rng.randrange(7)
        a, b = rng.choice(pool[-12:]), rng.choice(pool)  # mostly recent: deep paths
        if kind == 0:
            y = a * b
        elif kind == 1:
            y = a + b
        elif kind == 2:
            y = (a * 0.5).relu()
        elif kind == 3:
            y = a - b
        else:  # a custom node: 0 to 5 children, repeats allowed, int and float local grads
            k = rng.randrange(6)
            kids = [rng.choice(pool[-8:]) for _ in range(k)]
            grads = [rng.choice([1, -1, 2, 0.5, -0.25, 0.375]) for _ in range(k)]
            y = engine.Value(rng.choice([0.5, 1.5, -2.0]), tuple(kids), tuple(grads))
        pool.append(y)
    roots = [len(pool) - 1] + [rng.randrange(len(pool)) for _ in range(4)]
    return pool, roots


def assert_same_grads(pure_nodes, compiled_nodes):
    for i, (p, c) in enumerate(zip(pure_nodes, compiled_nodes)):
        assert same_float(p.grad, c.grad), (i, p.grad, c.grad)
        assert number_type(p.grad) is type(c.grad), (i, p.grad, c.grad)


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_of_every_fan_out_walk_as_the_pure_engine(seed):
    pure, roots = random_graph(PURE, seed, 300)
    with COMPILED.graph():
        compiled, same_roots = random_graph(COMPILED, seed, 300)
        assert same_roots == roots
        for r in roots:  # each backward adds to the grads the last ones left
            pure[r].backward()
            compiled[r].backward()
            assert_same_grads(pure, compiled)


@pytest.mark.parametrize("fan_out", [1, 3])
def test_deep_chains_of_one_child_and_of_three_walk_without_recursion(fan_out):
    n = 30_000
    with COMPILED.graph():
        x = COMPILED.Value(1.5)
        y = x
        for _ in range(n):
            # three children (y, x, y): y's grad 0.5 + 0.5 = 1 at every depth,
            # x's 0.25 from each node; one child (y): y's grad 1 throughout
            kids, grads = ((y, x, y), (0.5, 0.25, 0.5)) if fan_out == 3 else ((y,), (1.0,))
            y = COMPILED.Value(0.5, kids, grads)
        y.backward()
        assert x.grad == (0.25 * n + 1.0 if fan_out == 3 else 1.0)
        assert y._children[0].grad == 1.0
        del y


def root_of_five_edges(engine):
    a, b = engine.Value(1.5), engine.Value(-0.5)
    ab = a * b
    root = engine.Value(2.0, (a, ab, b, ab, a), (1, 0.5, 2, 0.25, -1))
    root.backward()
    return [a.grad, b.grad, ab.grad, root.grad]


def test_a_root_of_many_children_that_are_all_leaves_or_reached():
    """No frame but the root's: a node of three or more children is framed first."""
    want = root_of_five_edges(PURE)
    with COMPILED.graph():
        got = root_of_five_edges(COMPILED)
    assert [same_float(g, w) and type(g) is number_type(w) for g, w in zip(got, want)] == [True] * 4

"""Review of issue 19's backward walk (src/backward.c, merge ac40396): one-row
frames only for nodes the walk goes into, a sentinel frame, FRAME_MORE frames
keeping edge << 32 | node, and the accumulation taking the next node's grad
from a register when it is the child just written.

Every test compares with the pure engine (same bits, same int/float type, same
sign of zero) or with grads known in closed form where the pure engine's
recursion cannot go (paths as long as the arena).
"""
import gc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import same_float
from test_equivalence import number_type

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

PURE = get_engine("pure")
COMPILED = get_engine("compiled")
NUMS = [2, -1, 0, 3, 0.5, -0.0, 0.0, 1.25, -0.75]


def build(engine, leaves, program, make_leaf=None):
    """Run program (tuples over a pool) on engine: the pool of every node."""
    make_leaf = make_leaf or engine.Value
    pool = [make_leaf(x) for x in leaves]
    for step in program:
        kind, picks = step[0], step[1]
        kids = [pool[p % len(pool)] for p in picks]
        if kind == "mul":
            y = kids[0] * kids[1]
        elif kind == "add":
            y = kids[0] + kids[1]
        elif kind == "sub":
            y = kids[0] - kids[1]
        elif kind == "relu":
            y = kids[0].relu()
        elif kind == "pow":
            y = kids[0] ** 2
        else:  # custom: any number of children, repeats allowed, int or float local grads
            y = engine.Value(step[3], tuple(kids), tuple(step[2]))
        pool.append(y)
    return pool


def assert_same(pure, compiled, where=""):
    assert len(pure) == len(compiled)
    for i, (p, c) in enumerate(zip(pure, compiled)):
        assert same_float(p.grad, c.grad), (where, i, p.grad, c.grad)
        assert number_type(p.grad) is type(c.grad), (where, i, p.grad, c.grad)


def run_both(leaves, program, roots, arena=None):
    pure = build(PURE, leaves, program)
    compiled = build(COMPILED, leaves, program, arena.value if arena is not None else None)
    for r in roots:  # each backward adds to what the ones before left
        pure[r % len(pure)].backward()
        compiled[r % len(compiled)].backward()
        assert_same(pure, compiled, r)
    return pure, compiled


step_st = st.one_of(
    st.tuples(st.sampled_from(["mul", "add", "sub"]), st.lists(st.integers(0, 400), min_size=2, max_size=2)),
    st.tuples(st.sampled_from(["relu", "pow"]), st.lists(st.integers(0, 400), min_size=1, max_size=1)),
    st.lists(st.integers(0, 400), min_size=0, max_size=6).flatmap(lambda picks: st.tuples(
        st.just("custom"), st.just(picks),
        st.lists(st.sampled_from([1, -1, 2, 0, 0.5, -0.0, -0.25, 3]), min_size=len(picks), max_size=len(picks)),
        st.sampled_from([0.5, -2.0, 1.5, 0])))
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(leaves=st.lists(st.sampled_from(NUMS), min_size=1, max_size=4),
       program=st.lists(step_st, max_size=40), roots=st.lists(st.integers(0, 60), min_size=1, max_size=3))
def test_random_dags_of_every_fan_out_and_repeat_match_the_pure_engine_bit_for_bit(leaves, program, roots):
    roots = [len(leaves) + len(program) - 1] + roots  # the top first, then anywhere (a leaf too)
    with COMPILED.graph():
        run_both(leaves, program, roots)


def test_a_child_that_is_also_a_grandchild_and_listed_many_times():
    # node 3 lists x three times and x*x (whose children are x, x) between them
    leaves = [2, 0.5]
    program = [("mul", [0, 0]), ("custom", [0, 2, 0, 1, 0], [1, 2, 0.5, -1, 3], 1.0),
               ("custom", [3, 2, 3], [2, -1, 1], 0.5), ("add", [4, 3]), ("mul", [5, 2])]
    with COMPILED.graph():
        run_both(leaves, program, [6, 6, 4, 0, 6])


def test_fan_outs_0_1_2_3_many_at_the_root_and_below_with_every_child_reached():
    for k in [0, 1, 2, 3, 4, 9, 40]:
        leaves = [3, -0.5, 1.5]
        # a root of k children, every one reached already through an earlier sibling
        program = [("mul", [0, 1]), ("add", [3, 2]), ("custom", [0] * k, [2] * k, 1),
                   ("custom", [4, 3, 5] * k, [1, -1, 0.5] * k, 2.0),
                   ("custom", [6, 5, 4, 3] + [6] * k, [1, 2, 3, 4] + [0.5] * k, 0.0)]
        with COMPILED.graph():
            run_both(leaves, program, [7, 6, 5, 2, 7])


def test_leaf_roots_and_backward_twice_keep_the_int_one_and_the_accumulation():
    leaves = [2, -0.0, 0.5]
    program = [("custom", [], [], 1.0), ("mul", [0, 0]), ("relu", [1]), ("custom", [5, 4, 3], [2, 3, -1], 1)]
    with COMPILED.graph():
        pure, compiled = run_both(leaves, program, [0, 1, 3, 3, 6, 6, 0, 4])
        assert type(compiled[0].grad) is int and type(compiled[3].grad) is int


def test_int_local_grads_keep_ints_through_the_int_path_and_int_zero_is_never_negative():
    leaves = [2, 3, -4]
    # int local grads times an int grad: ints all the way; a 0 local grad times -x: +0
    program = [("custom", [0, 1, 2], [2, 0, -3], 5), ("custom", [3, 3], [-1, 0], 1),
               ("relu", [2]), ("custom", [4, 5, 2, 0], [0, 7, -1, 1], 1), ("mul", [6, 0])]
    with COMPILED.graph():
        pure, compiled = run_both(leaves, program, [6, 6, 7, 5])
        assert any(type(c.grad) is int and c.grad != 0 for c in compiled[:3])


def test_two_edge_nodes_with_int_local_grads_under_a_float_grad():
    # a custom node of two children is no add or multiply: its int local grads
    # meet a float grad (every product a float) then an int grad (products ints)
    leaves = [2, 3]
    program = [("custom", [0, 1], [2, -1], 1.5), ("mul", [2, 2]), ("custom", [2, 2], [0, 1], 1),
               ("custom", [0, 1], [-2, 0], 1)]
    with COMPILED.graph():
        run_both(leaves, program, [3, 4, 5, 3, 2])


def chain(make, x, n):
    """A path through every node: x*x (grad doubled), a custom node of one child
    (halved), of three (the same child thrice, grads summing to 1), in turn."""
    y = x
    for i in range(n):
        if i % 3 == 0:
            y = y * y
        elif i % 3 == 1:
            y = make(1.0, (y,), (0.5,))
        else:
            y = make(1.0, (y, y, y), (0.5, 0.25, 0.25))
    return y


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 299, 300, 301, 60_000])
def test_a_path_as_long_as_the_arena_fits_the_frames_and_the_sentinel(n):
    """Every node but the root is framed, in an arena holding only the path (the
    arena grows while it is made): frames plus the sentinel fill n_nodes rows."""
    arena = COMPILED.Arena()
    x = arena.value(1.0)
    y = chain(COMPILED.Value, x, n)
    assert len(arena) == n + 1  # node 0 is x: the path is the whole arena
    y.backward()
    # down through a multiply the grad doubles (both edges 1.0), through a
    # custom node of one child it halves, of three it stays
    want = 2.0 ** ((n + 2) // 3 - (n + 1) // 3)
    assert same_float(x.grad, want) and type(x.grad) is float
    assert y.grad == 1 and type(y.grad) is int
    # again: every node's grad pushed down holds the first walk's too (as the reference)
    if n < 400:  # compared with the pure engine where its recursion reaches
        y.backward()
        p = PURE.Value(1.0)
        q = chain(PURE.Value, p, n)
        q.backward(), q.backward()
        assert same_float(p.grad, x.grad) and type(x.grad) is type(p.grad)



def test_a_deep_path_gives_the_closed_form_grads_at_every_depth():
    arena = COMPILED.Arena()
    x = arena.value(1.0)
    nodes, y = [x], x
    for i in range(30_000):
        y = y * y if i % 3 == 0 else COMPILED.Value(1.0, (y,) if i % 3 == 1 else (y, y, y),
                                                    (0.5,) if i % 3 == 1 else (0.5, 0.25, 0.25))
        nodes.append(y)
    y.backward()
    # from the top down: grad 1 into each node, 2 below each multiply, then 1 after a custom pair
    g = 1.0
    for i in range(len(nodes) - 1, -1, -1):
        assert nodes[i].grad == g, i
        if i == 0:
            break
        g = g * (2.0 if (i - 1) % 3 == 0 else 0.5 if (i - 1) % 3 == 1 else 1.0)


def test_over_600_backwards_on_one_arena_with_drops_and_reclaims_past_the_stamp_wrap():
    arena = COMPILED.Arena()
    leaves = [2, 0.5, -1.5]
    base = [arena.value(v) for v in leaves]
    pure_base = [PURE.Value(v) for v in leaves]
    program = [("mul", [0, 1]), ("custom", [3, 0, 3, 2], [1, 0.5, 2, -1], 1.0), ("add", [4, 3]),
               ("custom", [5], [3], 0.5), ("mul", [6, 5])]
    for k in range(620):
        for v in base + pure_base:
            v.grad = 0
        pool = list(base)
        ppool = list(pure_base)
        for step in program:  # the same program on the kept leaves: new rows each time
            for eng, pl in ((COMPILED, pool), (PURE, ppool)):
                kids = [pl[p] for p in step[1]]
                pl.append(kids[0] * kids[1] if step[0] == "mul" else kids[0] + kids[1] if step[0] == "add"
                          else eng.Value(step[3], tuple(kids), tuple(step[2])))
        r = k % len(pool) if k % 7 == 0 else len(pool) - 1
        pool[r].backward()
        ppool[r].backward()
        assert_same(ppool, pool, k)
        del pool, ppool  # the top rows dropped: the next graph takes the same rows, old stamps in them
        if k % 50 == 0:
            gc.collect()
            arena.reclaim()
            assert len(arena) == 3


def test_graphs_after_scope_releases_and_reclaims_that_moved_rows():
    arena = COMPILED.Arena()
    leaves = [1.5, -2, 0.25]
    program = [("mul", [0, 1]), ("custom", [3, 3, 0, 2], [2, 1, -1, 0.5], 1.0), ("add", [4, 0]),
               ("custom", [5, 4, 3], [1, 1, 1], 2.0), ("mul", [6, 5])]
    for rnd in range(5):
        with arena.graph():
            junk = [arena.value(i) * 2.0 for i in range(37 * rnd)]  # rows taken then released
            run_both(leaves, program, [7, 6, 7], arena)
            del junk
        kept = [arena.value(i) for i in range(rnd + 3)]
        garbage = [arena.value(1.0) * 3.0 for _ in range(50)]
        held = run_both(leaves, program, [7], arena)[1]  # built above garbage
        del garbage
        gc.collect()
        arena.reclaim()  # held's rows move down
        pure = build(PURE, leaves, program)
        for node in held:
            node.grad = 0
        for p in pure:
            p.grad = 0
        for r in (7, 5, 7):
            held[r].backward()
            pure[r].backward()
            assert_same(pure, held, (rnd, r))
        del kept, held


def test_a_path_filling_every_row_of_the_columns_then_grown_by_one_node():
    """len(arena) == capacity: the frames and the sentinel take every stack row;
    then one node more grows the columns (stack ones too) and walks again."""
    arena = COMPILED.Arena()
    x = arena.value(1.0)
    y, i, nodes = x, 0, [x]
    while len(arena) < 3000 or len(arena) < arena.capacity:
        y = y * y if i % 2 == 0 else COMPILED.Value(1.0, (y,), (0.5,))
        nodes.append(y)
        i += 1
    cap = arena.capacity
    assert len(arena) == cap
    y.backward()
    want = 2.0 ** ((i + 1) // 2 - i // 2)  # doubled by each multiply, halved by each custom node
    assert same_float(x.grad, want) and type(x.grad) is float
    z = COMPILED.Value(1.0, (y, y, x), (1, 2, 3))  # three children: a FRAME_MORE at the top
    assert arena.capacity > cap
    for v in nodes:
        v.grad = 0
    z.backward()
    assert z.grad == 1 and type(z.grad) is int
    assert same_float(y.grad, 3) and type(y.grad) is int  # int local grads times the int 1
    assert same_float(x.grad, 3 + 3 * want) and type(x.grad) is float


def test_a_compact_sum_under_a_many_children_node_is_refused_before_any_grad():
    from test_compact_recording import _engine, compact_sum
    arena = _engine.Arena()
    w, x = [arena.value(0.5), arena.value(1.5)], [arena.value(2.0), arena.value(-1.0)]
    p = arena.value(3.0)
    with arena.graph():
        q = p * p
        s, _, _ = compact_sum(arena, w, x)
        top = COMPILED.Value(1.0, (q, p, q, s, p), (1, 2.0, 3, 4, 5))  # s reached from a FRAME_MORE frame
        with pytest.raises(RuntimeError, match="compact"):
            top.backward()
        assert [v.grad for v in (top, q, p, s, w[0])] == [0] * 5
        assert all(type(v.grad) is int for v in (top, q, p, s, w[0]))

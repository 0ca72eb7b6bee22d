"""The reclaiming arena: memory follows the live graph, not the history.

A node is live while its handle exists, or a live node has it as a child (an
optimizer or a tape holds its parameters' handles). When the columns are full,
the arena reclaims the rest before it grows: live nodes slide down in creation
order and their handles follow. None of that may change a float, an identity,
a mark, or what a stale handle says.
"""
import gc
import random
import struct

import pytest

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

E = get_engine("compiled")
PURE = get_engine("pure")
Arena, StaleValueError = E.Arena, E.StaleValueError


def bits(x):
    return struct.pack("<d", x)


def test_throwaway_arithmetic_stays_in_the_first_columns():
    arena = Arena()
    first = arena.capacity
    x = arena.value(3.0)
    kept = []
    for i in range(100_000):
        y = x * 2.0 + 1.0
        if i % 10_000 == 0:
            kept.append(y)  # a result kept in a history list
    assert arena.capacity == first  # 400,001 nodes made, never more than the first columns
    assert len(arena) <= first
    assert arena.reclaimed >= 400_001 - first
    assert [k.data for k in kept] == [7.0] * 10
    for k in kept:  # each kept result still has its whole graph
        assert k._children[0]._children[0] is x and k._children[1].data == 1.0
        assert k._children[0]._children[1].data == 2.0


def edge_capacity(arena):
    """Edges the columns hold: nbytes less the node columns, over the bytes of an edge."""
    edge_bytes = sum(arena.column(name).itemsize for name in ("child", "local_grad", "lg_int"))
    return (arena.nbytes - arena.capacity * int(Arena().bytes_per_node)) // edge_bytes


def test_edge_columns_grow_to_the_edges_a_node_appends():
    """Nodes of six children each, thrown away: the edge columns grow to six edges
    a node, so reclaiming waits for the node columns to fill (rather than running
    each time the edges do, with the node columns mostly empty)."""
    arena = Arena()
    leaves = [arena.value(float(i)) for i in range(6)]
    assert edge_capacity(arena) == 2 * arena.capacity  # the first columns: two edges a node
    first = arena.capacity
    for _ in range(20_000):
        y = E.Value(1.0, leaves, [1.0] * 6)
    assert arena.capacity == first  # nothing kept: the node columns never grow
    assert edge_capacity(arena) >= 5 * arena.capacity
    assert arena.reclaimed >= 20_000 - first
    assert y._children == tuple(leaves) and y.data == 1.0


def test_explicit_reclaim_keeps_handles_identity_and_order():
    arena = Arena()
    a = arena.value(2.0)
    junk = [arena.value(float(i)) * 3 for i in range(50)]  # 150 nodes, held by their handles
    b = a + 1
    c = b * b
    assert arena.reclaim() == 0
    del junk
    assert (a.node, b.node, c.node) == (0, 152, 153)
    assert arena.reclaim() == 150
    # a, b's constant 1, b, c: in creation order, children below parents, edges renumbered
    assert len(arena) == 4 and arena.num_edges == 4
    assert (a.node, b.node, c.node) == (0, 2, 3)
    assert list(arena.column("child")) == [0, 1, 2, 2]
    assert list(arena.column("child_start")) == [0, 0, 0, 2, 4]
    assert list(arena.column("data")) == [2.0, 1.0, 3.0, 9.0]
    assert c._children[0] is b and c._children[1] is b and b._children[0] is a
    assert b._children[1].data == 1 and type(b._children[1].data) is int and c.data == 9.0
    c.backward()
    assert (a.grad, b.grad, c.grad) == (6.0, 6.0, 1)
    assert arena.reclaim() == 0


def test_a_node_reached_only_through_a_parent_is_kept():
    arena = Arena()
    x = arena.value(1.0)
    root = x
    for _ in range(30):
        root = root * 1.5 + root  # the inner nodes have no handles: the last root reaches them
    n = len(arena)
    assert arena.reclaim() == 0 and len(arena) == n
    root.backward()
    assert root.data == 2.5 ** 30 and x.grad == 2.5 ** 30


def test_stale_handles_stay_stale_after_reclaiming():
    arena = Arena()
    keep = arena.value(1.0)
    with arena.graph():
        gone = keep * 2
        gone_child = gone._children[1]
    junk = [arena.value(float(i)) for i in range(3000)]  # reuses gone's rows, then grows
    del junk
    arena.reclaim()
    new = keep * 5  # lands where the released nodes once were
    for stale in (gone, gone_child):
        with pytest.raises(StaleValueError):
            stale.data
        with pytest.raises(StaleValueError):
            stale + new
        assert repr(stale) == "Value(<released>)"
    assert new.data == 5.0 and new._children[0] is keep


def test_marks_and_open_scopes_are_never_moved_under():
    """Nodes below a mark (of mark() or an open scope) never move, so release(mark)
    drops exactly the nodes made after it, as without reclaiming."""
    arena = Arena()
    junk = [arena.value(1.0) for _ in range(10)]
    keep = arena.value(2.0)
    del junk
    mark = arena.mark()  # the 11 nodes below it stay where they are
    tmp = [keep * float(i) for i in range(100)]
    del tmp
    assert arena.reclaim() == 200
    assert len(arena) == mark == 11 and keep.node == 10
    with arena.graph():
        inner = keep + 1
        assert arena.reclaim() == 0  # nothing above the scope's mark is garbage
        del inner
        assert arena.reclaim() == 2
        assert len(arena) == mark
    arena.release(mark)  # the mark stays good for another release: still nothing below it moves
    assert arena.reclaim() == 0 and keep.node == 10 and keep.data == 2.0


def test_no_reclaiming_while_a_step_is_recorded():
    arena = Arena()
    x = arena.value(1.0)
    for _ in range(10):
        x * 2
    E.begin_recording(arena)
    try:
        assert arena.reclaim() == 0
    finally:
        E.end_recording(arena)
    assert arena.reclaim() == 20


def random_program(V, rng, steps, reclaim=None):
    """Build a graph with garbage interleaved (the compiled arena reclaims it as
    it fills); keep a few results; backward from their sum. Returns every kept
    node's (data, grad) bits, and the leaves'."""
    leaves = [V(rng.uniform(-2, 2)) for _ in range(8)]
    kept = []
    pool = list(leaves)
    for step in range(steps):
        a, b = rng.choice(pool), rng.choice(pool)
        op = rng.randrange(7)
        if op == 0:
            r = a + b
        elif op == 1:
            r = a * b
        elif op == 2:
            r = a * rng.uniform(-1, 1) + 0.5
        elif op == 3:
            r = (a * 0.1).exp()
        elif op == 4:
            r = (a * a + 1.0).log()
        elif op == 5:
            r = (a - b).relu()
        else:
            r = a / (b * b + 1.0)
        for _ in range(rng.randrange(4)):  # throwaway work, never kept
            (r * 3.0 + 1.0).relu()
        if rng.random() < 0.3:
            kept.append(r)
            pool.append(r)
        if reclaim is not None and step % 97 == 0:
            reclaim()
    total = sum(kept, V(0.0))
    total.backward()
    return [(bits(v.data), bits(v.grad)) for v in leaves + kept + [total]]


@pytest.mark.parametrize("seed", range(6))
def test_gradients_are_the_pure_engines_across_reclaims(seed):
    want = random_program(PURE.Value, random.Random(seed), 2000)
    arena = E.default_arena()
    before = arena.reclaimed
    got = random_program(E.Value, random.Random(seed), 2000, reclaim=arena.reclaim)
    assert got == want
    assert arena.reclaimed > before


def test_adam_follows_parameters_that_moved():
    arena = E.default_arena()
    results = []
    for eng in (PURE, E):
        rng = random.Random(3)
        junk = [eng.Value(0.0) for _ in range(500)]  # below the parameters: reclaimed, so they move
        params = [eng.Value(rng.uniform(-1, 1)) for _ in range(20)]
        del junk
        rows = [p.node for p in params] if eng is E else None
        opt = eng.Adam(params, beta1=0.85, beta2=0.99, eps=1e-8)
        losses = []
        for step in range(5):
            loss = sum((p * p for p in params), eng.Value(0.0))
            loss.backward()
            if eng is E:
                arena.reclaim()
            opt.step(0.05, step)
            losses.append(loss.data)
            del loss
        results.append((losses, [bits(p.data) for p in params]))
        if eng is E:
            assert [p.node for p in params] != rows
    assert results[0] == results[1]


def test_replayed_training_after_the_parameters_moved(names_txt):
    """The replay's tape and Adam hold parameter rows: a reclaim between steps moves them."""
    from support import load_golden
    from microgpt.run import RunSettings, build_run
    golden = load_golden("names_default_20_steps.json")
    replay = get_engine("replay")
    arena = E.default_arena()
    junk = [E.Value(float(i)) for i in range(5000)]
    run = build_run(replay, RunSettings(input=str(names_txt), seed=42, steps=20))
    del junk
    losses = []

    def collect(step, loss, lr, dt):
        losses.append(loss)
        if step == 1:
            gc.collect()
            assert arena.reclaim() >= 5000

    run.trainer.run(on_step=collect)
    assert losses == golden["losses"]


@pytest.mark.parametrize("seed", range(4))
def test_scopes_reclaims_and_dropped_handles_interleaved(seed):
    """Random work in a small arena: scopes opened and closed, handles dropped, reclaims
    forced or triggered by full columns. Every value kept outside the scopes is the
    pure engine's; every handle made inside a closed scope is stale."""
    rng = random.Random(seed)
    arena = Arena()
    kept_c, kept_p, stale, scopes = [arena.value(1.25)], [PURE.Value(1.25)], [], []
    for _ in range(3000):
        r = rng.random()
        if r < 0.05 and len(scopes) < 3:
            scopes.append((arena.graph().__enter__(), []))
        elif r < 0.10 and scopes:
            scope, made = scopes.pop()
            scope.__exit__(None, None, None)
            stale.extend(made)
        elif r < 0.12:
            arena.reclaim()
        else:
            i = rng.randrange(len(kept_c))
            k = rng.uniform(-1, 1)
            c = (kept_c[i] * k + kept_c[-1]).relu() + 0.5
            for _ in range(rng.randrange(3)):
                kept_c[i] * 2.0 + c  # thrown away: garbage above the innermost mark
            if scopes:
                scopes[-1][1].append(c)
            else:
                kept_c.append(c)
                kept_p.append((kept_p[i] * k + kept_p[-1]).relu() + 0.5)
                if len(kept_c) > 50:  # drop an old one: its graph lives on only through its parents
                    j = rng.randrange(1, len(kept_c) - 1)
                    del kept_c[j], kept_p[j]
    while scopes:
        scope, made = scopes.pop()
        scope.__exit__(None, None, None)
        stale.extend(made)
    kept_c[-1].backward()
    kept_p[-1].backward()
    assert [(bits(c.data), bits(c.grad)) for c in kept_c] == [(bits(p.data), bits(p.grad)) for p in kept_p]
    for s in stale:
        with pytest.raises(StaleValueError):
            s.data
    assert arena.reclaimed > 0


def test_a_backward_after_the_graph_and_parameters_moved(names_txt):
    """A reclaim between forward and backward: the compiled graph moves under its loss
    handle, and a replay's tape takes its parameters' new rows (the epoch changed)."""
    from microgpt.model import parameters
    from microgpt.run import RunSettings, build_run
    arena = E.default_arena()
    with E.graph():  # room for a step's graph (nodes, edges): no reclaim but the one asked for below
        x = E.Value(0.0)
        room = [x * x for _ in range(2 * 65536)]
        del room, x
    grads = []
    for eng in (E, get_engine("replay")):
        junk = [E.Value(0.0) for _ in range(3000)]  # below the parameters
        run = build_run(eng, RunSettings(input=str(names_txt), seed=42, steps=20))
        del junk
        params = parameters(run.sd)
        loss = run.trainer.forward(run.trainer.tokens_at(0))
        assert (type(loss).__name__ == "ReplayedLoss") == (eng.name == "replay")
        rows = [p.node for p in params]
        assert arena.reclaim() >= 3000
        assert [p.node for p in params] != rows
        run.trainer.backward(loss)
        grads.append([bits(p.grad) for p in params])
        del loss, run, params
    from support import load_golden
    golden = load_golden("names_default_step0_grads.json")["grads"]
    assert grads[0] == grads[1] == [bits(g) for rows in golden.values() for row in rows for g in row]


def test_adam_refuses_a_parameter_moved_to_another_arena():
    from microgpt import ArenaMismatchError
    p, q = E.Value(1.0), E.Value(2.0)
    opt = E.Adam([p, q], beta1=0.85, beta2=0.99, eps=1e-8)
    other = Arena()
    with other.graph():
        q.__init__(1.0, (other.value(0.0),), (1.0,))  # now a custom node there
        with pytest.raises(ArenaMismatchError):
            opt.step(0.01, 0)

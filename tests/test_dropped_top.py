"""The default arena drops its top nodes when their last handle goes.

A node on top of the arena has no parents (they would lie above it), so once no
handle names it nothing reaches it: when the top node's handle is freed, the
default arena (the drop-in's, where only Python's reference counting ends a
graph) drops the nodes on top that no handle names, a graph's worth at a time
(256 or more; fewer stay until a reclaim or the next drop), as a reclaim would
but moving nothing. Never below the pinned mark, never while a scope is open or
a step is recorded; a stale handle stays stale, and a kept node keeps its row.
"""
import gc

import pytest

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

E = get_engine("compiled")
Value, StaleValueError = E.Value, E.StaleValueError
_engine = pytest.importorskip("microgpt._engine")


def graph(x):
    """GRAPH nodes over x: per term a constant and a product, then sum's int 0 and
    the first sum, and 99 more sums (each term dies below the sum above it)."""
    return sum(x * float(k) for k in range(100))


GRAPH = 2 * 100 + 2 + 99


@pytest.fixture
def arena():
    gc.collect()  # no handle of an earlier test left to be freed in the middle of one
    arena = _engine.default_arena()
    x = Value(1.0)
    room = [graph(x) for _ in range(30)]  # columns for 9,000 nodes: no reclaim in a test
    del room, x
    return arena


def test_a_graph_has_the_nodes_counted():
    arena = E.Arena()
    g = graph(arena.value(2.0))
    assert len(arena) == 1 + GRAPH and g.data == 9900.0


def test_a_thrown_away_graph_leaves_nothing_behind(arena):
    x = Value(2.0)
    n, reclaimed = len(arena), arena.reclaimed
    g = graph(x)
    assert len(arena) == n + GRAPH
    del g
    assert len(arena) == n and arena.reclaimed == reclaimed + GRAPH
    graph(x).log()
    assert len(arena) == n
    y = x * 4.0  # appended where the dropped nodes were, as new nodes
    assert y.node == n + 1 and y.data == 8.0 and y.grad == 0 and type(y.grad) is int


def test_a_few_thrown_away_nodes_wait_for_the_next_drop(arena):
    x = Value(2.0)
    n = len(arena)
    x * 3.0
    assert len(arena) == n + 2  # fewer than a graph's worth: kept for now
    graph(x)
    assert len(arena) == n  # the graph's drop takes them too


def test_a_kept_node_stops_the_drop_and_keeps_its_row(arena):
    x = Value(2.0)
    n = len(arena)
    kept = graph(x)
    top = graph(kept)
    del top
    assert len(arena) == n + GRAPH and kept.node == n + GRAPH - 1
    last_term = kept._children[1]  # x * 99.0, just below kept: it gets a handle
    assert last_term.node == n + GRAPH - 2 and last_term.data == 198.0
    del kept
    assert len(arena) == n + GRAPH  # one node unnamed on top: it waits
    assert last_term.data == 198.0
    del last_term  # not the top node's handle: nothing happens yet
    assert len(arena) == n + GRAPH
    graph(x)  # a graph thrown away on top: its drop goes down through kept's
    assert len(arena) == n


def test_a_stale_handle_stays_stale_where_new_nodes_come(arena):
    x = Value(3.0)
    with E.graph():
        gone = graph(x)
    n = len(arena)
    graph(x)  # dropped at once, in gone's rows
    made = [graph(x) for _ in range(2)]  # in and past gone's rows
    assert [m.data for m in made] == [14850.0] * 2
    with pytest.raises(StaleValueError):
        gone.data
    with pytest.raises(StaleValueError):
        gone + 1
    assert len(arena) == n + 2 * GRAPH


def test_nothing_is_dropped_inside_a_scope_or_below_a_mark(arena):
    x = Value(1.0)
    n = len(arena)
    with E.graph():
        graph(x)
        assert len(arena) == n + GRAPH  # the scope releases it at its end
    assert len(arena) == n
    mark = arena.mark()
    graph(x)
    assert len(arena) == mark  # above the mark: dropped
    arena.release(mark)
    assert len(arena) == mark


def test_nothing_is_dropped_while_a_step_is_recorded(arena):
    x = Value(1.0)
    n = len(arena)
    _engine.begin_recording(arena)
    try:
        graph(x)
        assert len(arena) == n + GRAPH  # a recording notes rows: nothing may go under it
    finally:
        _engine.end_recording(arena)
    graph(x)  # the next drop takes the recorded step's thrown-away rows too
    assert len(arena) == n


def test_an_explicit_arena_keeps_its_rows_until_reclaimed():
    arena = E.Arena()
    x = arena.value(2.0)
    graph(x)
    assert len(arena) == 1 + GRAPH
    assert arena.reclaim() == GRAPH and len(arena) == 1


def test_a_dropped_graph_changes_no_float(arena):
    w = [Value(0.5 * k) for k in range(1, 5)]

    def loss():
        s = sum(sum(wi * wi * float(k) for wi in w) for k in range(30))
        return (s * 0.25).log()

    grads = []
    for _ in range(3):
        out = loss()
        out.backward()
        grads.append([wi.grad for wi in w])
        for wi in w:
            wi.grad = 0
        del out  # the graph is dropped; the next is made in its rows
    assert grads[0] == grads[1] == grads[2]
    kept = loss()  # and a graph made without any drop before it
    kept.backward()
    assert [wi.grad for wi in w] == grads[0]


def test_a_dropped_graph_leaves_no_exponent_or_grad_in_its_rows(arena):
    # a drop clears the grads of the rows it takes, and the operands of its powers
    # only (the one op that writes one), reading the op bytes: rows that held powers,
    # grads and epochs come back as new nodes' rows
    x = Value(1.5)
    n = len(arena)
    top = sum((x * float(k + 1)) ** (k % 3 + 0.5) for k in range(100))
    top.backward()
    assert x.grad != 0 and 0.5 in list(arena.column("operand"))[n:]
    del top
    assert len(arena) == n
    made = [graph(x) for _ in range(2)]  # adds, multiplies and constants in the powers' rows
    rows = len(arena) - n
    assert list(arena.column("operand"))[n:] == [0.0] * rows
    assert list(arena.column("grad"))[n:] == [0.0] * rows
    assert all(m.grad == 0 and type(m.grad) is int for m in made)
    assert len(set(list(arena.column("epoch"))[n:])) == 1
    assert made[0].data == made[1].data == 1.5 * 4950.0

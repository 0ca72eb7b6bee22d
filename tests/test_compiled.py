"""The compiled engine's own promises: safety of handles, arenas, graph scopes, memory."""
import gc
import math
import os

import pytest

import microgpt.engine
from microgpt import available_engines, get_engine


AVAILABLE = "compiled" in available_engines()
if AVAILABLE:
    from microgpt import _engine
    from microgpt._engine import Arena, ArenaMismatchError, StaleValueError, Value

    E = get_engine("compiled")


def test_extension_is_real_when_required():
    """CI sets MICROGPT_REQUIRE_COMPILED=1: there the extension must have been built and imported.
    (This one test runs, and fails, when the extension is missing.)"""
    if os.environ.get("MICROGPT_REQUIRE_COMPILED") != "1":
        pytest.skip("MICROGPT_REQUIRE_COMPILED is not set to 1")
    assert microgpt.engine.compiled_available()
    assert get_engine("auto").name == "replay"
    assert get_engine("compiled").__name__ == "microgpt._engine"


@pytest.fixture(autouse=True)
def _needs_compiled(request):
    if not AVAILABLE and request.node.originalname != "test_extension_is_real_when_required":
        pytest.skip("the compiled engine is not built here")


def test_exception_types():
    assert issubclass(StaleValueError, RuntimeError)
    assert issubclass(ArenaMismatchError, ValueError)
    assert E.name == "compiled"


# ---------------------------------------------------------------- stale handles

@pytest.fixture
def handles():
    """(leaf, op node) made inside a scope that has ended, and a live Value (in an outer scope,
    so that the test leaves the default arena as it found it)."""
    arena = _engine.default_arena()
    mark = len(arena)
    with E.graph():
        live = Value(2.0)
        with E.graph():
            leaf = Value(1.5)
            node = leaf * live
        yield leaf, node, live
    assert len(arena) == mark


USES = {
    ".data": lambda s, live: s.data,
    ".grad": lambda s, live: s.grad,
    ".data =": lambda s, live: setattr(s, "data", 1.0),
    ".grad =": lambda s, live: setattr(s, "grad", 1.0),
    "s + live": lambda s, live: s + live,
    "live + s": lambda s, live: live + s,
    "s + 1": lambda s, live: s + 1,
    "1 + s": lambda s, live: 1 + s,
    "s - live": lambda s, live: s - live,
    "live - s": lambda s, live: live - s,
    "s - 1": lambda s, live: s - 1,
    "1 - s": lambda s, live: 1 - s,
    "s * live": lambda s, live: s * live,
    "live * s": lambda s, live: live * s,
    "s * 2": lambda s, live: s * 2,
    "2 * s": lambda s, live: 2 * s,
    "s / live": lambda s, live: s / live,
    "live / s": lambda s, live: live / s,
    "s / 2": lambda s, live: s / 2,
    "2 / s": lambda s, live: 2 / s,
    "s ** 2": lambda s, live: s ** 2,
    "-s": lambda s, live: -s,
    "s.log()": lambda s, live: s.log(),
    "s.exp()": lambda s, live: s.exp(),
    "s.relu()": lambda s, live: s.relu(),
    "s.backward()": lambda s, live: s.backward(),
    "s.node": lambda s, live: s.node,
    "s.op": lambda s, live: s.op,
    "s._children": lambda s, live: s._children,
    "s._local_grads": lambda s, live: s._local_grads,
    "sum([live, s])": lambda s, live: sum([live, s]),
}


@pytest.mark.parametrize("use", list(USES))
@pytest.mark.parametrize("which", ["leaf", "node"])
def test_released_handle_raises_on_every_use(handles, use, which):
    leaf, node, live = handles
    stale = leaf if which == "leaf" else node
    with pytest.raises(StaleValueError):
        USES[use](stale, live)
    assert live.data == 2.0 and live.grad == 0  # the live Value is untouched


def test_released_handle_raises_even_after_its_index_is_reused():
    with E.graph():
        old = Value(1.5)
        old_index = old.node
    with E.graph():
        new = Value(-7.0)
        assert new.node == old_index  # the very same row of the arena
        with pytest.raises(StaleValueError):
            old.data
        with pytest.raises(StaleValueError):
            old.data = 99.0
        with pytest.raises(StaleValueError):
            old.grad = 99.0
        with pytest.raises(StaleValueError):
            old + new
        with pytest.raises(StaleValueError):
            old.backward()
        assert new.data == -7.0 and new.grad == 0  # never read or written through the old handle
        assert repr(old) == "Value(<released>)"


def test_stale_child_handles_from_introspection():
    with E.graph():
        y = Value(1.0) * 2
        children = y._children
        assert [c.data for c in children] == [1.0, 2.0]
    for c in children:
        with pytest.raises(StaleValueError):
            c.data


def test_explicit_release_to_a_mark():
    arena = Arena()
    keep = arena.value(1.0)
    mark = arena.mark()
    gone = keep * 3
    assert len(arena) == mark + 2
    arena.release(mark)
    assert len(arena) == mark
    with pytest.raises(StaleValueError):
        gone.data
    assert keep.data == 1.0
    for bad in (-1, len(arena) + 1):
        with pytest.raises(ValueError):
            arena.release(bad)


def test_adam_step_refuses_released_parameters():
    with E.graph():
        params = [Value(0.5), Value(-0.5)]
        opt = E.Adam(params, beta1=0.85, beta2=0.99, eps=1e-8)
        (params[0] * params[1]).backward()
        opt.step(0.01, 0)  # fine inside the scope
    with pytest.raises(StaleValueError):
        opt.step(0.01, 1)
    with E.graph():
        reused = [Value(9.0), Value(9.0)]  # whatever now sits in those rows is not touched
        with pytest.raises(StaleValueError):
            opt.step(0.01, 1)
        assert [v.data for v in reused] == [9.0, 9.0]


def test_adam_refuses_a_released_parameter_at_construction(handles):
    leaf, _, _ = handles
    with pytest.raises(StaleValueError):
        E.Adam([leaf], beta1=0.85, beta2=0.99, eps=1e-8)


def test_adam_refuses_values_of_the_other_engine():
    pure = get_engine("pure")
    with pytest.raises(TypeError):
        E.Adam([pure.Value(1.0)], beta1=0.85, beta2=0.99, eps=1e-8)


def test_repr_of_released_handle_does_not_crash(handles):
    leaf, node, live = handles
    assert "released" in repr(leaf) and "released" in repr(node)
    assert repr(live) == "Value(data=2.0, grad=0)"  # the pure engine's repr: grad starts as the int 0
    assert "released" in str(node)


# ---------------------------------------------------------------- arenas

def test_values_of_two_arenas_do_not_mix():
    a1, a2 = Arena(), Arena()
    x, y = a1.value(1.0), a2.value(2.0)
    for combine in (lambda: x + y, lambda: y + x, lambda: x * y, lambda: x - y,
                    lambda: x / y, lambda: sum([x, y])):
        with pytest.raises(ArenaMismatchError):
            combine()
    with pytest.raises(ArenaMismatchError):
        E.Adam([x, y], beta1=0.85, beta2=0.99, eps=1e-8)


def test_an_arena_keeps_its_own_nodes():
    arena = Arena()
    default_before = len(_engine.default_arena())
    x = arena.value(1.5)
    y = (x * 2 + 1).exp()
    assert y.arena is arena and x.arena is arena
    assert len(arena) == 6  # x, Value(2), x * 2, Value(1), +, exp
    assert len(_engine.default_arena()) == default_before
    y.backward()
    assert x.grad == math.exp(1.5 * 2 + 1) * 1 * 2


def test_default_arena_is_where_values_live():
    assert Value(1.0).arena is _engine.default_arena()
    arena = _engine.default_arena()
    mark = len(arena)
    with E.graph():
        Value(1.0) + 2
        assert len(arena) == mark + 3
    assert len(arena) == mark


# ---------------------------------------------------------------- graph scopes

def test_nested_scopes_release_last_in_first_out():
    arena = Arena()
    p = arena.value(1.0)
    with arena.graph():
        outer = p * 2
        n_outer = len(arena)
        with arena.graph():
            inner = outer * 3
            assert inner.data == 6.0
        assert len(arena) == n_outer
        with pytest.raises(StaleValueError):
            inner.data
        assert outer.data == 2.0  # the outer scope's nodes survive the inner's end
        again = outer + 1
        assert again.data == 3.0
    assert len(arena) == 1
    for v in (outer, again):
        with pytest.raises(StaleValueError):
            v.data
    assert p.data == 1.0


def test_scope_releases_on_exception():
    arena = Arena()
    mark = arena.mark()
    with pytest.raises(ZeroDivisionError):
        with arena.graph():
            x = arena.value(0.0) * 2
            x ** -1
    assert len(arena) == mark
    with pytest.raises(StaleValueError):
        x.data


def test_parameters_made_outside_a_scope_survive_it():
    params = [Value(0.3), Value(-0.7)]
    opt = E.Adam(params, beta1=0.85, beta2=0.99, eps=1e-8)
    for step in range(3):
        with E.graph():
            loss = (params[0] * params[1] + 1) ** 2
            loss.backward()
            g = (params[0].grad, params[1].grad)
            assert g != (0, 0)
            opt.step(0.01, step)
        assert params[0].grad == 0 and params[1].grad == 0
        assert all(math.isfinite(p.data) for p in params)
    assert params[0].data != 0.3 and params[1].data != -0.7


def test_arena_memory_stays_flat_over_repeated_scopes():
    arena = Arena()
    params = [arena.value(0.01 * i) for i in range(64)]
    mark = arena.mark()
    sizes = []
    for _ in range(100):
        with arena.graph():
            h = [sum((w * x for w, x in zip(params, params[i:] + params[:i])), arena.value(0.0)).relu()
                 for i in range(8)]
            loss = sum(h, arena.value(0.0)) ** 2
            loss.backward()
        assert len(arena) == mark
        sizes.append(arena.nbytes)
        for p in params:
            p.grad = 0
    assert sizes[0] > 0
    assert sizes[-1] == sizes[0]  # no growth after the first scope
    assert len(set(sizes)) == 1


def test_values_are_not_tracked_by_the_garbage_collector():
    arena = Arena()
    with E.graph():
        for v in (Value(1.0), arena.value(1.0), Value(1.0) + 1, (Value(2.0) * 3).log(), -Value(1.0)):
            assert gc.is_tracked(v) is False
        for c in (Value(1.0) * 2)._children:
            assert gc.is_tracked(c) is False


# ---------------------------------------------------------------- inspection

def test_columns_are_copies_of_the_right_lengths():
    arena = Arena()
    a, b = arena.value(1.5), arena.value(2.0)
    c = a * b
    d = c ** 2
    d.backward()
    n, e = len(arena), arena.num_edges
    assert (n, e) == (4, 3)
    assert list(arena.column("data")) == [1.5, 2.0, 3.0, 9.0]
    assert list(arena.column("grad")) == [2.0 * 6.0, 1.5 * 6.0, 2 * 3.0 ** 1, 1.0]
    assert list(arena.column("operand")) == [0.0, 0.0, 0.0, 2.0]
    assert [_engine.OP_NAMES[o] for o in arena.column("op")] == ["leaf", "leaf", "mul", "pow"]
    assert list(arena.column("child_start")) == [0, 0, 0, 2, 3]
    assert list(arena.column("child")) == [0, 1, 2]
    assert list(arena.column("local_grad")) == [2.0, 1.5, 2 * 3.0 ** 1]
    assert [a.op, c.op, d.op, (a + 1)._children[1].op] == ["leaf", "mul", "pow", "const"]
    assert len(arena.column("data")) == len(arena) == 6  # a + 1 added Value(1) and the sum
    assert len(arena.column("child")) == arena.num_edges == 5
    col = arena.column("data")
    col[0] = 100.0
    assert a.data == 1.5  # a copy: writing it changes nothing
    with pytest.raises(KeyError):
        arena.column("nope")


def test_columns_follow_growth():
    arena = Arena()
    x = arena.value(1.0)
    y = x
    for _ in range(5000):  # well past the initial capacity
        y = y + x
    assert len(arena) == 5001
    assert len(arena.column("data")) == len(arena)
    assert len(arena.column("grad")) == len(arena)
    assert len(arena.column("child_start")) == len(arena) + 1
    assert len(arena.column("child")) == len(arena.column("local_grad")) == arena.num_edges == 2 * 5000
    assert arena.column("data")[-1] == 5001.0


def test_node_indices_follow_creation_order():
    arena = Arena()
    a = arena.value(1.0)
    b = a / 3  # Value(1/3) then the product
    assert a.node == 0
    assert [c.node for c in b._children] == [0, 1]
    assert b.node == 2
    assert b._children[1].data == 3 ** -1


def test_every_column_of_the_table_is_shown_at_its_length():
    # the columns are arena.h's tables; Arena.column names every one it shows
    arena = Arena()
    a = arena.value(3)
    b = (a * 2.5 + a).relu()
    b.backward()
    with pytest.raises(KeyError) as missing:
        arena.column("nope")
    names = str(missing.value).split(": ", 1)[1].rstrip("'\"").split(", ")
    assert {"data", "grad", "operand", "op", "tag", "epoch", "child_start", "child", "local_grad",
            "lg_int"} <= set(names)
    n, e = len(arena), arena.num_edges
    edge_columns = {"child", "local_grad", "lg_int"}
    for name in names:
        rows = len(arena.column(name))
        assert rows == (n + 1 if name == "child_start" else e if name in edge_columns else n), name
    assert list(arena.column("tag"))[0] & 1  # Value(3) is an int: TAG_DATA_INT
    assert list(arena.column("lg_int"))[:2] == [0, 1]  # a * 2.5: d/da is the float 2.5, d/d(2.5) the int 3
    assert len(set(arena.column("epoch"))) == 1

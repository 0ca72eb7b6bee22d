"""The compiled engine under misuse: every case raises a clear exception, none
crashes, none reads or links a released node. (Found in review; each was a
crash, a dangling child or a silently released node before.)"""
import pytest

_engine = pytest.importorskip("microgpt._engine")
from microgpt import StaleValueError  # noqa: E402  (the engine raises microgpt.errors' class)
Arena, Value = _engine.Arena, _engine.Value


def test_a_handle_made_without_init_raises_instead_of_crashing():
    v = Value.__new__(Value)  # no arena: every use must refuse it
    for use in (lambda: v + 1, lambda: 2 * v, lambda: v * v, lambda: v ** 2, lambda: v.log(),
                lambda: v.data, lambda: v.grad, lambda: v.backward()):
        with pytest.raises(StaleValueError, match="never initialised"):
            use()
    assert repr(v) == "Value(<released>)"
    with pytest.raises(TypeError):
        _engine.GraphScope(None)


def test_value_cannot_be_subclassed():
    # a subclass would get CPython's generic operator slots, which call the
    # subclass's reflected method first and so reorder the children
    with pytest.raises(TypeError):
        type("Named", (Value,), {})


def test_pow_checks_its_base_after_running_the_exponents_python_code():
    arena = Arena()
    mark = arena.mark()

    class Exponent(float):
        def __sub__(self, other):  # power() computes k - 1: this releases the base
            arena.release(mark)
            return float(self) - other

    x = arena.value(3.0) * 1.0
    with pytest.raises(StaleValueError):
        x ** Exponent(2.0)
    assert len(arena) == mark  # no node points at the released base


def test_an_operation_on_a_stale_handle_appends_nothing():
    arena = Arena()
    with arena.graph():
        stale = arena.value(1.0)
    keep = arena.value(2.0)
    n = len(arena)
    for use in (lambda: stale + 1, lambda: stale * 2, lambda: -stale, lambda: stale - 1,
                lambda: 1 - stale, lambda: stale / 2, lambda: keep + stale, lambda: keep * stale):
        with pytest.raises(StaleValueError):
            use()
    assert len(arena) == n


def test_graph_scopes_must_close_in_reverse_order():
    arena = Arena()
    outer, inner = arena.graph(), arena.graph()
    outer.__enter__()
    arena.value(1.0)
    inner.__enter__()
    arena.value(2.0)
    with pytest.raises(RuntimeError, match="reverse order"):
        outer.__exit__(None, None, None)
    assert len(arena) == 2  # nothing was released by the refused exit
    inner.__exit__(None, None, None)
    assert len(arena) == 1
    outer.__exit__(None, None, None)
    assert len(arena) == 0
    kept = arena.value(3.0)  # made after every scope closed: it stays
    assert kept.data == 3.0


def test_a_scope_cannot_be_entered_twice():
    arena = Arena()
    scope = arena.graph()
    with scope:
        arena.value(1.0)
        with pytest.raises(RuntimeError, match="already open"):
            scope.__enter__()
    assert len(arena) == 0
    with scope:  # closed again: it can be reused
        arena.value(1.0)
    assert len(arena) == 0

"""The rows past an arena's last node: what a new node finds there.

An append writes neither a node's grad nor its operand (0 unless it is a power),
and a handle is live when its node's epoch is its own: the rows from the last
node on hold 0 in those three columns, because a release or a reclaim clears
the rows it drops. A node made where a released or reclaimed one was must
start as a new one, and a handle of the old one must stay stale.
"""
import pytest

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

E = get_engine("compiled")
Arena, StaleValueError = E.Arena, E.StaleValueError


def used_rows(arena, mark):
    """grad, operand and epoch of the rows from mark on."""
    return [list(arena.column(name))[mark:] for name in ("grad", "operand", "epoch")]


def test_a_released_row_comes_back_as_a_new_node():
    arena = Arena()
    a = arena.value(2.0)
    mark = arena.mark()
    b = a ** 3  # operand 3
    c = b * a
    c.backward()
    assert (b.grad, c.grad, a.grad) == (2.0, 1, 32.0)
    arena.release(mark)
    with pytest.raises(StaleValueError):
        b.grad
    d = a + 1.5  # the constant and the sum, in b's and c's rows
    assert d.node == mark + 1
    assert d.grad == 0 and type(d.grad) is int
    grads, operands, epochs = used_rows(arena, mark)
    assert grads == [0.0, 0.0] and operands == [0.0, 0.0]
    assert len(set(epochs)) == 1 and epochs[0] != 0
    with pytest.raises(StaleValueError):
        c.data  # its row holds d now: a new epoch
    with pytest.raises(StaleValueError):
        b.grad = 0
    with pytest.raises(StaleValueError):
        b.data = 1.0


def test_a_reclaimed_row_comes_back_as_a_new_node():
    arena = Arena()
    x = arena.value(4.0)
    kept = x * 2.0  # rows 1 and 2: live, below what is reclaimed
    y = x * x
    z = y ** -0.5  # rows 3 and 4, with grads and an operand
    z.backward()
    assert z.grad == 1 and y.grad != 0.0 and x.grad != 0.0
    del y, z
    assert arena.reclaim() == 2
    assert kept.node == 2 and kept.data == 8.0 and x.grad != 0.0
    w = kept * kept  # in y's row
    assert w.node == 3 and w.grad == 0 and type(w.grad) is int and w.data == 64.0
    grads, operands, epochs = used_rows(arena, 3)
    assert grads == [0.0] and operands == [0.0] and 0 not in epochs
    u = w ** 1.0  # in z's row
    assert u.node == 4 and u.grad == 0 and list(arena.column("operand"))[4] == 1.0


def test_a_power_of_minus_zero_keeps_its_operand():
    arena = Arena()
    x = arena.value(2.0)
    p = x ** -0.0  # not +0.0: its local grad is -0.0 * x ** -1.0
    q = x ** 0.0
    ops = list(arena.column("operand"))
    assert str(ops[p.node]) == "-0.0" and str(ops[q.node]) == "0.0"
    assert str(p._local_grads[0]) == "-0.0" and str(q._local_grads[0]) == "0.0"


def test_plain_fields_keep_their_types():
    arena = Arena()
    v = arena.value(2)
    assert v.data == 2 and type(v.data) is int
    v.data = 2.5
    assert v.data == 2.5 and type(v.data) is float
    v.grad = 0
    assert type(v.grad) is int
    v.grad = 0.0
    assert type(v.grad) is float and v.grad == 0.0
    v.grad = True  # a bool is an int to the pure engine: the property's path
    assert v.grad == 1 and type(v.grad) is int
    with pytest.raises(TypeError):
        v.data = "x"
    with pytest.raises((AttributeError, NotImplementedError, TypeError)):
        del v.grad

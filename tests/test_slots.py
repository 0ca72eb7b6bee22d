"""The compiled Value's own add, multiply, subtract and divide slots (microgpt/_slots.pxi) and its handles'
free list: what takes the fast path and what is left to the generic one gives the pure
engine's nodes and numbers, and a freed handle keeps no arena but the default one alive."""
import sys
from fractions import Fraction

import pytest

from microgpt import available_engines, get_engine

pytestmark = pytest.mark.skipif("compiled" not in available_engines(), reason="the compiled engine is not built here")


class Half(float):
    """A float subclass: not an exact float, so the generic slot takes it."""


OPERANDS = [2.5, -3, 0, -0.0, True, Half(0.5), Fraction(1, 3)]


def as_held(number):
    """The number as the compiled engine holds it (README: a bool is the int 1 or 0,
    a Fraction a double): what the pure engine is given to compare with."""
    return int(number) if isinstance(number, bool) else float(number) if isinstance(number, Fraction) else number


@pytest.mark.parametrize("given", OPERANDS, ids=repr)
def test_a_number_on_either_side_makes_the_pure_engines_nodes(given):
    out = {}
    for name in ("pure", "compiled"):
        V = get_engine(name).Value
        number = given if name == "compiled" else as_held(given)
        x = V(1.5)
        ys = [x + number, number + x, x * number, number * x, (number + x) * (x * number)]
        loss = sum(ys)
        loss.backward()
        out[name] = ([repr(y) for y in ys], [y.op if name == "compiled" else None for y in ys],
                     repr(x), [repr(c) for c in ys[1]._children])
    assert out["compiled"][0] == out["pure"][0]
    assert out["compiled"][2:] == out["pure"][2:]  # x's grad, and number + x is x + Value(number)
    assert out["compiled"][1] == ["add", "add", "mul", "mul", "mul"]


def test_a_freed_handle_keeps_no_arena_but_the_default_one_alive():
    compiled = get_engine("compiled")
    arena = compiled.Arena()
    default = compiled.default_arena()
    # the free list now holds handles of the default arena: the new arena's
    # operations take them over, and give them back without their arena
    garbage = [compiled.Value(float(i)) * 2.0 for i in range(100)]
    del garbage
    base = sys.getrefcount(arena)
    x, y = arena.value(1.5), arena.value(2)
    z = (x * y + 1.0) * (3 * x)
    assert z.arena is arena and z.data == (1.5 * 2 + 1.0) * (3 * 1.5)
    assert sys.getrefcount(arena) > base
    del x, y, z
    assert sys.getrefcount(arena) == base
    # and handles of the default arena, taken after those, belong to it
    v = compiled.Value(2.0) * compiled.Value(4.0)
    assert v.arena is default and v.data == 8.0


def test_a_stale_or_foreign_operand_raises_through_the_slots():
    compiled = get_engine("compiled")
    with compiled.graph():
        stale = compiled.Value(1.0)
    live = compiled.Value(2.0)
    other = compiled.Arena().value(3.0)
    for op in (lambda: stale * live, lambda: live + stale, lambda: 2.0 * stale, lambda: stale + 1):
        with pytest.raises(compiled.StaleValueError):
            op()
    with pytest.raises(compiled.ArenaMismatchError):
        live * other
    with pytest.raises(compiled.ArenaMismatchError):
        other + live


# x - number and x / y: the subtract and divide slots' fast paths (a float or an int
# on the right of a Value, a Value divided by a Value) and what they leave to the
# generic slot (zeros, overflows, nans and infinities, ints beyond a double, subclasses;
# ints are exact below 2 ** 53 only: README)
SUBTRAHENDS = [2.5, -3, 0, 0.0, -0.0, True, Half(0.5), 2 ** 52 + 1, -(2 ** 52) - 1, float("inf"), 1e-310]
DIVISORS = [2.0, -3, 16, 0.5, -0.25, 3e-300, 2e-301, 1e-310, 2.5e299, 1e301, -0.0, 0, float("inf"),
            float("nan"), 10 ** 400, 2 ** 60 + 1, True, Half(0.5)]


def outcome(name, x_data, build):
    """What build(x) gives on engine name for x = Value(x_data), after backward: the
    result's and x's reprs, the result's op and its children's reprs, or the error."""
    V = get_engine(name).Value
    x = V(x_data)
    try:
        y = build(x, V)
    except Exception as e:  # the same error on both engines
        return type(e).__name__
    y.backward()
    kids = [repr(c) for c in y._children]
    grandkids = [repr(c) for c in y._children[1]._children]
    return repr(y), repr(x), kids, grandkids, (y.op if name == "compiled" else None)


@pytest.mark.parametrize("x_data", [1.5, -2, 0], ids=repr)
@pytest.mark.parametrize("given", SUBTRAHENDS, ids=repr)
def test_a_value_minus_a_number_makes_the_pure_engines_nodes(given, x_data):
    pure = outcome("pure", x_data, lambda x, V: x - as_held(given))
    compiled = outcome("compiled", x_data, lambda x, V: x - given)
    assert compiled[:4] == pure[:4]
    assert compiled[4] == "add"  # x + (-number)


@pytest.mark.parametrize("x_data", [1.5, -2, 0], ids=repr)
@pytest.mark.parametrize("given", DIVISORS, ids=repr)
def test_a_value_divided_by_a_number_makes_the_pure_engines_nodes(given, x_data):
    pure = outcome("pure", x_data, lambda x, V: x / as_held(given))
    compiled = outcome("compiled", x_data, lambda x, V: x / given)
    if isinstance(pure, str):
        assert compiled == pure  # ZeroDivisionError, OverflowError: raised by both
        return
    assert compiled[:4] == pure[:4]
    assert compiled[4] == "mul"  # x * number ** -1


@pytest.mark.parametrize("x_data", [1.5, -2, 0], ids=repr)
@pytest.mark.parametrize("divisor", [2.0, -3, 4, 0.5, 0, -0.0, 1e-160, 1e-300, 3e200], ids=repr)
def test_a_value_divided_by_a_value_makes_the_pure_engines_nodes(divisor, x_data):
    pure = outcome("pure", x_data, lambda x, V: x / V(divisor))
    compiled = outcome("compiled", x_data, lambda x, V: x / V(divisor))
    assert compiled[:4] == pure[:4]
    if not isinstance(compiled, str):
        assert compiled[4] == "mul"  # x * divisor ** -1, the power a node


def test_a_stale_or_foreign_operand_raises_through_subtract_and_divide():
    compiled = get_engine("compiled")
    arena = compiled.Arena()
    x, w = arena.value(2.0), compiled.Value(3.0)
    with pytest.raises(compiled.ArenaMismatchError):
        x / w
    with arena.graph():
        gone = x * 2.0
    for stale in (lambda: gone - 1.0, lambda: gone / 2.0, lambda: gone / x, lambda: x / gone):
        with pytest.raises(compiled.StaleValueError):
            stale()
    # gone / x made x ** -1 before it met the stale gone, as __truediv__ makes it; the
    # others appended nothing
    assert len(arena) == 2

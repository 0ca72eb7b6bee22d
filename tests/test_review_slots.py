"""The subtract and divide slots (microgpt/_slots.pxi) and the rows a drop, a
reclaim or a release hands back (src/arena.c), attacked from outside.

Three oracles: the generic methods Cython made (Value.__sub__ and friends, which
the type's own slots bypass) for every operand, the pure engine for random
programs run in rows that held powers and grads before, and StaleValueError,
ArenaMismatchError and the mixed-engine TypeError for handles that must not work.
MICROGPT_FUZZ_EXAMPLES raises the example count.
"""
import decimal
import fractions
import gc
import math
import os
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

np = pytest.importorskip("numpy")
PURE, COMPILED = get_engine("pure"), get_engine("compiled")
V = COMPILED.Value
_engine = pytest.importorskip("microgpt._engine")
EXAMPLES = int(os.environ.get("MICROGPT_FUZZ_EXAMPLES", "30"))
EXACT_INT = 2 ** 53


class Float(float):
    pass


class Int(int):
    pass


def key(x):
    """A number as the same bits and the same type (int or float); nans alike."""
    if isinstance(x, int):
        return ("int", int(x))
    if x != x:
        return ("float", "nan")
    return ("float", struct.pack("<d", x))


def node(v):
    """v's number, op, local grads and children's numbers, as keys."""
    return (key(v.data), key(v.grad), v.op, [key(g) for g in v._local_grads],
            [(key(c.data), c.op, [key(g) for g in c._local_grads]) for c in v._children])


def outcome(f):
    try:
        return node(f())
    except Exception as e:  # noqa: BLE001 (the exception is the outcome compared)
        return (type(e), str(e))


# ---------------------------------------------------------------- the fast slots against the generic methods

NUMBERS = [0, 0.0, -0.0, 3, -3, 7.0, 0.1, True, False, Float(2.0), Int(3), Int(0), 2 ** 52 + 1, 2 ** 53 + 1,
           -(2 ** 53 + 1), 2 ** 64 + 1, 2 ** 1023, 10 ** 308, 10 ** 309, -10 ** 309, 1e-300, -1e-300,
           1.0000000000000002e-300, 9.999999999999999e299, 1e300, 1e-310, 5e-324, 1e-200, 1e200,
           1.7976931348623157e308, math.inf, -math.inf, math.nan, fractions.Fraction(1, 3),
           decimal.Decimal("0.1"), np.float64(3.0), np.float64(-0.0), np.int64(3), np.float32(0.1)]
SLOTS = [("-", lambda x, n: x - n, V.__sub__), ("/", lambda x, n: x / n, V.__truediv__),
         ("+", lambda x, n: x + n, V.__add__), ("*", lambda x, n: x * n, V.__mul__)]
X_DATA = [1.5, 3, 0, -0.0, -2, 2 ** 53, 1e308, 2 ** 1023]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's own 0.0 ** -1
@pytest.mark.parametrize("x_data", X_DATA, ids=repr)
def test_a_number_operand_gives_what_the_generic_method_gives(x_data):
    arena = COMPILED.Arena()
    for n in NUMBERS:
        for name, slot, method in SLOTS:
            for make in (V, arena.value):
                x = make(x_data)
                before = len(x.arena)
                fast = outcome(lambda: slot(x, n))
                grown = len(x.arena) - before
                before = len(x.arena)
                assert fast == outcome(lambda: method(x, n)), (x_data, name, n)
                assert grown == len(x.arena) - before, (x_data, name, n)


DIVISORS = [2.0, -3, 0, 0.0, -0.0, 1e-310, 1e-160, 1e-200, 1e155, 1e300, math.inf, -math.nan, 2 ** 60 + 1]


@pytest.mark.parametrize("y_data", DIVISORS, ids=repr)
def test_a_value_divisor_gives_what_the_generic_method_gives(y_data):
    for make in (V, COMPILED.Arena().value):
        x, y = make(1.5), make(y_data)
        assert outcome(lambda: x / y) == outcome(lambda: V.__truediv__(x, y))
        assert outcome(lambda: y / y) == outcome(lambda: V.__truediv__(y, y))
        assert outcome(lambda: x - y) == outcome(lambda: V.__sub__(x, y))
        n = len(x.arena)
        try:
            x / y
        except ArithmeticError:
            assert len(x.arena) == n  # nothing left behind by a refused division


# ---------------------------------------------------------------- random programs in reused rows, against pure

SPECIAL = [0, 0.0, -0.0, 1, -1, 2, -7, 2 ** 52, 0.5, -2.5, 1e-300, -1e-300, 1.0000000000000002e-300,
           9.999999999999999e299, 1e300, 1e-310, 5e-324, 1.7976931348623157e308, math.inf, -math.inf,
           math.nan, 1e-200, 1e200, 1e154, 1 / 3]
numbers = st.one_of(st.sampled_from(SPECIAL), st.floats(), st.integers(-2 ** 52, 2 ** 52), st.integers(-5, 5))
OPS = ["add", "sub", "mul", "div", "rsub", "rdiv", "pow", "neg", "relu", "subv", "divv", "divself", "child"]
steps = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 999), st.integers(0, 999), numbers),
                 min_size=1, max_size=25)
leaves = st.lists(st.one_of(st.floats(-1e3, 1e3), st.integers(-9, 9), st.sampled_from([0, -0.0, 1e-310])),
                  min_size=1, max_size=4)
EXPONENTS = [0, 0.0, -0.0, 1, -1, 2, 0.5, -2.5]  # 0 and 0.0 write no operand: a stale one would show


def operate(op, a, b, n):
    return {"add": lambda: a + n, "sub": lambda: a - n, "mul": lambda: a * n, "div": lambda: a / n,
            "rsub": lambda: n - a, "rdiv": lambda: n / a, "neg": lambda: -a, "relu": lambda: a.relu(),
            "pow": lambda: a ** EXPONENTS[hash(n) % len(EXPONENTS)] if n == n else a ** 2,
            "subv": lambda: a - b, "divv": lambda: a / b, "divself": lambda: a / a,
            "child": lambda: (a._children or (a,))[-1]}[op]()


def run(engine, xs, program, arena=None):
    pool = [engine.Value(x) if arena is None else arena.value(x) for x in xs]
    trace = []
    for op, i, j, n in program:
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        before = None if arena is None else len(arena)
        try:
            r = operate(op, a, b, n)
        except (ArithmeticError, ValueError) as e:
            trace.append((type(e), str(e)))
            assert before is None or len(arena) == before, (op, n)  # nothing appended
            continue
        trace.append(key(r.data))
        pool.append(r)
    try:
        pool[-1].backward()
    except (ArithmeticError, ValueError) as e:
        trace.append(type(e))
    trace.append([(key(v.data), key(v.grad), [key(g) for g in v._local_grads],
                   [(key(c.data), key(c.grad)) for c in v._children]) for v in pool])
    return trace


def too_big(trace):
    if isinstance(trace, (list, tuple)):
        if len(trace) == 2 and trace[0] == "int":
            return abs(trace[1]) > EXACT_INT
        return any(too_big(t) for t in trace)
    return False


def dirty_rows(mode):
    """Rows of the default arena that held divisions' powers (operands -1, -2.5), grads
    from a backward and live epochs, handed back by a drop, a reclaim or a release."""
    gc.collect()
    x = V(1.25)
    junk = lambda: sum(((x + float(k)) / (x - 0.5)) ** -2.5 - k for k in range(70))  # noqa: E731
    if mode == "release":
        with COMPILED.graph():
            top = junk()
            top.backward()
    else:
        top = junk()
        top.backward()
        if mode == "reclaim":
            keep = V(0.0)  # named above the junk: no drop, a reclaim takes it
            del top
            _engine.default_arena().reclaim()
            return x, keep
    del top
    return x, None


@pytest.mark.parametrize("mode", ["drop", "reclaim", "release"])
def test_powers_with_a_zero_exponent_in_reused_rows_read_no_old_exponent(mode):
    # x ** 0 writes no operand (its row's 0 stands): an exponent left in a row that held
    # a power would make the int 3 ** 0 a float, and its local grad an int
    kept = dirty_rows(mode)
    n = len(_engine.default_arena())
    for k in (0, 0.0):
        made = [V(3) ** k for _ in range(200)]
        assert all(node(m)[:4] == (("int", 1) if type(k) is int else key(1.0), ("int", 0), "pow", [key(0.0)])
                   for m in made), k
        assert type(k) is float or made[0].node == n + 1  # in the rows handed back
        sum(made).backward()
        assert all(m.grad == 1 for m in made)
        del made
    assert kept


@pytest.mark.parametrize("mode", ["drop", "reclaim", "release", "explicit"])
def test_random_programs_in_reused_rows_agree_with_the_pure_engine(mode):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(leaves, steps)
    def check(xs, program):
        expected = run(PURE, xs, program)
        assume(not too_big(expected))
        if mode == "explicit":
            arena = COMPILED.Arena()
            arena.value(2.0) ** -1
            arena.reclaim()
            assert run(COMPILED, xs, program, arena) == expected
            return
        kept = dirty_rows(mode)
        n = len(_engine.default_arena())
        assert run(COMPILED, xs, program) == expected
        assert len(_engine.default_arena()) >= n and kept
    check()


# ---------------------------------------------------------------- handles that must not work, in reused rows

def refusals(live, other):
    """Every fast-path position of `other` beside a live handle, as (outcome, the generic method's)."""
    cases = [(lambda: other - 1, lambda: V.__sub__(other, 1)), (lambda: other - 0.5, lambda: V.__sub__(other, 0.5)),
             (lambda: other / 2, lambda: V.__truediv__(other, 2)), (lambda: other / 4.0, lambda: V.__truediv__(other, 4.0)),
             (lambda: other / live, lambda: V.__truediv__(other, live)),
             (lambda: live / other, lambda: V.__truediv__(live, other)),
             (lambda: other / other, lambda: V.__truediv__(other, other)),
             (lambda: live - other, lambda: V.__sub__(live, other)), (lambda: 1 - other, lambda: V.__rsub__(other, 1)),
             (lambda: 1 / other, lambda: V.__rtruediv__(other, 1)), (lambda: other + 1, lambda: V.__add__(other, 1)),
             (lambda: live * other, lambda: V.__mul__(live, other))]
    return [(outcome(fast), outcome(generic)) for fast, generic in cases]


@pytest.mark.parametrize("reuse", ["drop", "reclaim", "both"])
def test_stale_handles_stay_stale_in_every_slot_after_rows_come_back(reuse):
    gc.collect()
    arena = _engine.default_arena()
    x = V(2.0)
    stale = []
    def all_refused():
        for s in stale:
            for fast, generic in refusals(x, s):
                assert fast == generic and fast[0] is COMPILED.StaleValueError

    for _ in range(3):  # released by scopes, their rows then taken by drops and reclaims, and reused
        with COMPILED.graph():
            stale.append(sum((x / (x - float(k) - 0.5)) for k in range(90)))
            stale.append(stale[-1]._children[0])
        all_refused()
        if reuse in ("drop", "both"):
            sum((x - 1.0) / (x * float(k) + 3) for k in range(120))  # dropped at once
        if reuse in ("reclaim", "both"):
            top = sum(x / (x - float(k) - 0.5) for k in range(150))
            keep = V(1.0)
            del top
            arena.reclaim()
            del keep
        all_refused()
        made = [x / (x - float(k) - 0.5) for k in range(300)]  # new nodes in the stale handles' rows
        assert all(type(m.grad) is int and m.grad == 0 for m in made)
        all_refused()
    assert x.data == 2.0 and len(made) == 300


def test_foreign_and_mixed_handles_are_refused_in_every_slot():
    x = V(2.0)
    foreign = COMPILED.Arena().value(3.0)
    results = refusals(x, foreign)
    assert all(fast == generic for fast, generic in results)
    # the positions that combine the two arenas (the others run on the foreign one)
    assert all(results[k][0][0] is COMPILED.ArenaMismatchError for k in (4, 5, 7, 11))
    p = PURE.Value(3.0)
    for f in (lambda: x - p, lambda: x / p, lambda: p - x, lambda: p / x):
        with pytest.raises(TypeError, match="pure-engine Value"):
            f()  # (p - x, p / x: the pure engine's -x and x ** -1 run on the compiled side first)
    for f in (lambda: x - p, lambda: x / p):  # the compiled side's slots append nothing
        n = len(_engine.default_arena())
        with pytest.raises(TypeError, match="pure-engine Value"):
            f()
        assert len(_engine.default_arena()) == n

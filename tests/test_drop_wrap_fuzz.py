"""Dropped top nodes and wrapping walk stamps, against the pure engine, with ==.

Random programs on the default arena (the one that drops the nodes on top no
handle names when the top node's handle goes) keep and drop handles in random
orders between operations, throw away graphs of a few hundred nodes (so drops
happen, down through earlier leftovers), read children (new handles for inner
nodes), reclaim, and run backward again and again from kept nodes. Between
backwards the compiled side runs other walks (254 of them bring the next
walk's stamp back to the last one's: the visit stamps are a byte a node, the
column cleared every 255 walks), and every program ends walking its newest
nodes twice, 254 walks apart. Every kept node's data and grad must be
the pure engine's: the same bits, the same type (int or float), the same sign
of zero; and handles a scope released must stay stale while their rows are
dropped and reused. MICROGPT_FUZZ_EXAMPLES raises the example count.
"""
import gc
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from support import same_float
from test_equivalence import EXACT_INT, assert_same_nodes, number_type, walk

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

PURE = get_engine("pure")
COMPILED = get_engine("compiled")
_engine = pytest.importorskip("microgpt._engine")
EXAMPLES = int(os.environ.get("MICROGPT_FUZZ_EXAMPLES", "40"))

index = st.integers(min_value=0, max_value=10 ** 6)  # taken modulo the pool's size
numbers = st.one_of(st.integers(min_value=-3, max_value=3),
                    st.floats(min_value=-4, max_value=4, allow_nan=False),
                    st.integers(min_value=-10 ** 6, max_value=10 ** 6).map(lambda n: n / 7919),
                    st.sampled_from([0.0, -0.0, 0.5]))
instruction = st.one_of(
    st.tuples(st.just("two"), st.sampled_from(["add", "mul", "sub", "div"]), index, index),
    st.tuples(st.just("number"), st.sampled_from(["add", "mul", "radd", "rmul", "rsub", "div"]), index, numbers),
    st.tuples(st.just("one"), st.sampled_from(["neg", "exp", "relu", "log", "sq"]), index),
    # a graph of 3 n + 1 nodes over a pool entry: kept, or thrown away at once (a drop)
    st.tuples(st.just("big"), index, st.integers(min_value=85, max_value=140), st.booleans()),
    st.tuples(st.just("drop"), index),  # a handle goes (not the top's, mostly)
    st.tuples(st.just("drop_last"),),   # the newest handle goes (often the top node's)
    st.tuples(st.just("child"), index, index),  # a handle for a child (an inner node, often)
    # backward from a pool entry, then (compiled only) other walks, then maybe backward from
    # it again: 254 walks between bring the second's stamp back to the first's (the column
    # must have been cleared meanwhile, else the second walk skips the first's nodes)
    st.tuples(st.just("backward"), index, st.sampled_from([254, 254, 253, 509, 0, 100]), st.booleans()),
    st.tuples(st.just("zero_grads"),),
    st.tuples(st.just("reclaim"),),     # (compiled only) live nodes slide down
    st.tuples(st.just("scope"), index),  # nodes made in a graph() scope: stale after it (compiled)
)
programs = st.fixed_dictionaries({
    "leaves": st.lists(numbers, min_size=1, max_size=4),
    "code": st.lists(instruction, min_size=4, max_size=40),
})


def big(x, n):
    """sum(x * k for k in 1..n): 3 n + 1 nodes, the top one the sum."""
    return sum(x * float(k) for k in range(1, n + 1))


def operate(engine, instr, pool):
    """The node an operation instruction makes."""
    kind, op, a = instr[0], instr[1], pool[instr[2] % len(pool)]
    if kind == "one":
        return -a if op == "neg" else a ** 2 if op == "sq" else getattr(a, op)()
    b = pool[instr[3] % len(pool)] if kind == "two" else instr[3]
    return {"add": lambda: a + b, "mul": lambda: a * b, "sub": lambda: a - b, "div": lambda: a / b,
            "radd": lambda: b + a, "rmul": lambda: b * a, "rsub": lambda: b - a}[op]()


class Side:
    """A small graph of its own for the compiled engine's extra walks."""

    def __init__(self):
        self.x = COMPILED.Value(0.5)
        self.y = (self.x * self.x).exp()

    def walks(self, n):
        for _ in range(n):
            self.y.backward()


def run(engine, program, side=None):
    """Run the program; returns the outcomes (an exception type or "ok" for each
    instruction, and the kept nodes' numbers after each backward)."""
    pool = [engine.Value(x) for x in program["leaves"]]
    outcomes, stale = [], []
    for instr in program["code"]:
        op = instr[0]
        try:
            if op == "big":
                out = big(pool[instr[1] % len(pool)], instr[2])
                if instr[3]:
                    pool.append(out)
                del out
            elif op == "drop":
                if len(pool) > 1:
                    del pool[instr[1] % len(pool)]
            elif op == "drop_last":
                if len(pool) > 1:
                    del pool[-1]
            elif op == "child":
                children = pool[instr[1] % len(pool)]._children
                if children:
                    pool.append(children[instr[2] % len(children)])
                del children
            elif op == "backward":
                run_backward(pool, instr, side, outcomes)
            elif op == "zero_grads":
                for v in pool:
                    v.grad = 0
            elif op == "reclaim":
                if engine is COMPILED:
                    _engine.default_arena().reclaim()
            elif op == "scope":
                with engine.graph():
                    inside = big(pool[instr[1] % len(pool)], 90)
                    if engine is COMPILED:
                        stale.append(inside)
                    del inside
            else:
                pool.append(operate(engine, instr, pool))
        except (ArithmeticError, ValueError) as e:
            outcomes.append(type(e))
        else:
            outcomes.append("ok")
        for v in stale:  # released in its scope: stale, whatever rows were dropped or reused since
            with pytest.raises(COMPILED.StaleValueError):
                v.data
    for k in (-1, -2):  # the newest nodes (often the deepest), each walked twice, 254 walks apart
        run_backward(pool, ("backward", k, 254, True), side, outcomes)
    return outcomes, pool


def run_backward(pool, instr, side, outcomes):
    """backward from a pool entry; then side's walks (compiled only), and maybe the same
    backward again; notes every kept node's numbers."""
    root = pool[instr[1] % len(pool)]
    try:
        root.backward()
        if side is not None:
            side.walks(instr[2])
        if instr[3]:
            root.backward()
    except (ArithmeticError, ValueError) as e:
        outcomes.append(type(e))
    outcomes.append([(v.data, v.grad) for v in pool])


def same_outcomes(p, c):
    assert len(p) == len(c)
    for x, y in zip(p, c):
        if isinstance(x, list):
            assert len(x) == len(y)
            for (pd, pg), (cd, cg) in zip(x, y):
                assert same_float(pd, cd) and same_float(pg, cg), (pd, pg, cd, cg)
                assert number_type(pd) is type(cd) and number_type(pg) is type(cg), (pd, pg, cd, cg)
        else:
            assert x == y


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs)
def test_random_keeps_drops_and_walks_agree_with_the_pure_engine(program):
    gc.collect()
    pure_outcomes, pure_pool = run(PURE, program)
    assume(not any(type(x) is int and abs(x) > EXACT_INT
                   for v in pure_pool for x in (v.data, v.grad)))
    compiled_outcomes, compiled_pool = run(COMPILED, program, Side())
    same_outcomes(pure_outcomes, compiled_outcomes)
    pure_order, pure_shape = walk(PURE, pure_pool)
    compiled_order, compiled_shape = walk(COMPILED, compiled_pool)
    assert pure_shape == compiled_shape
    assert_same_nodes(pure_order, compiled_order)

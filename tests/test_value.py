"""The Value contract (the pure engine, _pure.py, states it), on every engine built here.

Each test runs once per engine (the ``engine`` fixture of conftest.py). The
expected numbers are the table's formulas evaluated with Python floats; the
only tolerance is in the finite-difference checks, where one is unavoidable.
"""
import math
from contextlib import contextmanager

import pytest
from support import same_float

A, B = 1.5, -2.5  # data of the two leaves a and b: nonzero, not special
C = 3             # a plain int operand
F = 0.75          # a plain float operand


# ---------------------------------------------------------------- helpers

def key(engine, v):
    """A node's identity: the object for pure, the arena index for compiled."""
    return v.node if engine.name != "pure" else id(v)


class Created(list):
    """Keys of the nodes created inside a ``created`` block, in creation order."""


@contextmanager
def created(engine):
    """Collect the keys of the nodes created inside, in creation order."""
    out = Created()
    if engine.name != "pure":
        from microgpt import _engine
        arena = _engine.default_arena()
        start = len(arena)
        yield out
        out.extend(range(start, len(arena)))
    else:
        cls = engine.Value
        original = cls.__init__
        made = []

        def recording_init(self, *args, **kwargs):
            original(self, *args, **kwargs)
            made.append(self)

        cls.__init__ = recording_init
        try:
            yield out
        finally:
            cls.__init__ = original
        out.objects = made  # keeps every new object alive, so no id is reused
        out.extend(id(v) for v in made)


# A spec of the graph an expression must build: "a" / "b" are the existing
# leaves; Leaf(x) is a new leaf holding the number x; Node(data, children,
# local_grads) a new operation node.

class Leaf:
    def __init__(self, data):
        self.data = data


class Node:
    def __init__(self, data, children, local_grads):
        self.data, self.children, self.local_grads = data, children, local_grads


def check_spec(engine, v, spec, leaves, new_keys):
    """Assert v matches spec; append the keys of new nodes in post-order."""
    if isinstance(spec, str):
        assert key(engine, v) == key(engine, leaves[spec]), f"expected the existing leaf {spec}"
        return
    assert key(engine, v) not in {key(engine, x) for x in leaves.values()}
    assert same_float(v.data, spec.data), (v.data, spec.data)
    assert v.grad == 0
    if isinstance(spec, Leaf):
        assert len(v._children) == 0 and len(v._local_grads) == 0
    else:
        children, local_grads = v._children, v._local_grads
        assert len(children) == len(spec.children) == len(local_grads)
        for got, want in zip(local_grads, spec.local_grads):
            assert same_float(got, want), (local_grads, spec.local_grads)
        for child, child_spec in zip(children, spec.children):
            check_spec(engine, child, child_spec, leaves, new_keys)
    new_keys.append(key(engine, v))


def neg_spec(x, name):
    # -x is x * -1
    return Node(x * -1, [name, Leaf(-1)], [-1, x])


CASES = {
    # expression: (build(V, a, b), spec)
    "a + b": (lambda V, a, b: a + b, Node(A + B, ["a", "b"], [1, 1])),
    "a + c": (lambda V, a, b: a + C, Node(A + C, ["a", Leaf(C)], [1, 1])),
    "c + a": (lambda V, a, b: C + a, Node(A + C, ["a", Leaf(C)], [1, 1])),
    "f + a": (lambda V, a, b: F + a, Node(A + F, ["a", Leaf(F)], [1, 1])),
    "a * b": (lambda V, a, b: a * b, Node(A * B, ["a", "b"], [B, A])),
    "a * c": (lambda V, a, b: a * C, Node(A * C, ["a", Leaf(C)], [C, A])),
    "c * a": (lambda V, a, b: C * a, Node(A * C, ["a", Leaf(C)], [C, A])),
    "f * a": (lambda V, a, b: F * a, Node(A * F, ["a", Leaf(F)], [F, A])),
    "a * a": (lambda V, a, b: a * a, Node(A * A, ["a", "a"], [A, A])),
    "a ** 2": (lambda V, a, b: a ** 2, Node(A ** 2, ["a"], [2 * A ** 1])),
    "a ** 3.0": (lambda V, a, b: a ** 3.0, Node(A ** 3.0, ["a"], [3.0 * A ** 2.0])),
    "a ** 0.5": (lambda V, a, b: a ** 0.5, Node(A ** 0.5, ["a"], [0.5 * A ** -0.5])),
    "a ** -1": (lambda V, a, b: a ** -1, Node(A ** -1, ["a"], [-1 * A ** -2])),
    "a ** 0": (lambda V, a, b: a ** 0, Node(A ** 0, ["a"], [0 * A ** -1])),
    "b ** 2": (lambda V, a, b: b ** 2, Node(B ** 2, ["b"], [2 * B ** 1])),
    "b ** -3": (lambda V, a, b: b ** -3, Node(B ** -3, ["b"], [-3 * B ** -4])),
    "a.log()": (lambda V, a, b: a.log(), Node(math.log(A), ["a"], [1 / A])),
    "a.exp()": (lambda V, a, b: a.exp(), Node(math.exp(A), ["a"], [math.exp(A)])),
    "b.exp()": (lambda V, a, b: b.exp(), Node(math.exp(B), ["b"], [math.exp(B)])),
    "a.relu()": (lambda V, a, b: a.relu(), Node(A, ["a"], [1.0])),
    "b.relu()": (lambda V, a, b: b.relu(), Node(0.0, ["b"], [0.0])),
    "-a": (lambda V, a, b: -a, neg_spec(A, "a")),
    "a - b": (lambda V, a, b: a - b, Node(A + B * -1, ["a", neg_spec(B, "b")], [1, 1])),
    "a - c": (lambda V, a, b: a - C, Node(A + -C, ["a", Leaf(-C)], [1, 1])),
    "a - f": (lambda V, a, b: a - F, Node(A + -F, ["a", Leaf(-F)], [1, 1])),
    "c - a": (lambda V, a, b: C - a, Node(A * -1 + C, [neg_spec(A, "a"), Leaf(C)], [1, 1])),
    "a / b": (lambda V, a, b: a / b,
              Node(A * B ** -1, ["a", Node(B ** -1, ["b"], [-1 * B ** -2])], [B ** -1, A])),
    "a / c": (lambda V, a, b: a / C, Node(A * C ** -1, ["a", Leaf(C ** -1)], [C ** -1, A])),
    "a / f": (lambda V, a, b: a / F, Node(A * F ** -1, ["a", Leaf(F ** -1)], [F ** -1, A])),
    "c / a": (lambda V, a, b: C / a,
              Node(A ** -1 * C, [Node(A ** -1, ["a"], [-1 * A ** -2]), Leaf(C)], [C, A ** -1])),
    "a / a": (lambda V, a, b: a / a,
              Node(A * A ** -1, ["a", Node(A ** -1, ["a"], [-1 * A ** -2])], [A ** -1, A])),
    "sum([a, b, a])": (lambda V, a, b: sum([a, b, a]),
                       Node(A + 0 + B + A,
                            [Node(A + 0 + B, [Node(A + 0, ["a", Leaf(0)], [1, 1]), "b"], [1, 1]), "a"],
                            [1, 1])),
}


# ---------------------------------------------------------------- structure and forward values

@pytest.mark.parametrize("expr", list(CASES))
def test_operation_builds_the_specified_nodes(engine, expr):
    """Forward value, children (in order), local grads and exactly the new nodes of the table."""
    build, spec = CASES[expr]
    with engine.graph():
        a, b = engine.Value(A), engine.Value(B)
        with created(engine) as made:
            out = build(engine.Value, a, b)
        new_keys = []
        check_spec(engine, out, spec, {"a": a, "b": b}, new_keys)
        # exactly those nodes were created, in the order of a post-order walk (creation order)
        assert made == new_keys
        assert a.data == A and b.data == B  # operands untouched


def test_value_holds_data_and_starts_with_zero_grad(engine):
    with engine.graph():
        for x in (0.0, -0.0, 1.5, -2.5, 3, 1e300, float("inf")):
            v = engine.Value(x)
            assert same_float(v.data, x)
            assert v.grad == 0 and math.copysign(1, v.grad) == 1
            assert len(v._children) == 0
            assert len(v._local_grads) == 0
        nan = engine.Value(float("nan"))
        assert math.isnan(nan.data)


def test_every_new_node_starts_with_zero_grad(engine):
    with engine.graph():
        a, b = engine.Value(A), engine.Value(B)
        for build, _ in CASES.values():
            out = build(engine.Value, a, b)
            assert out.grad == 0
            for child in out._children:
                assert child.grad == 0


def test_data_and_grad_are_writable(engine):
    with engine.graph():
        a, b = engine.Value(A), engine.Value(B)
        y = a * b
        a.data = 10.0
        a.grad = 2.5
        assert a.data == 10.0 and a.grad == 2.5
        # the node kept the values it was made from: data and local grads are captured at creation
        assert y.data == A * B
        assert tuple(y._local_grads) == (B, A)
        assert (a * b).data == 10.0 * B


def test_relu_at_zero_and_negative_zero(engine):
    with engine.graph():
        for x in (0.0, -0.0, -1.0):
            r = engine.Value(x).relu()
            assert r.data == 0 and math.copysign(1, r.data) == 1
            assert same_float(r._local_grads[0], 0.0)


# ---------------------------------------------------------------- backward

def test_backward_sets_root_grad_and_chains(engine):
    with engine.graph():
        a, b = engine.Value(A), engine.Value(B)
        y = (a * b).exp()
        y.backward()
        assert y.grad == 1
        # chain rule in the reference's order: child.grad += local_grad * v.grad
        m = y._children[0]
        assert m.grad == math.exp(A * B) * 1
        assert a.grad == B * m.grad
        assert b.grad == A * m.grad


def test_backward_accumulates_over_edges_and_calls(engine):
    with engine.graph():
        a, b = engine.Value(A), engine.Value(B)
        (a * a).backward()                      # the same node on both edges
        assert a.grad == 0 + A * 1 + A * 1
        (a + a).backward()
        assert a.grad == (A + A) + 1 + 1
        a.grad = 0
        y = a * b
        y.backward()
        y.backward()                             # a second backward adds again (root reset to 1)
        assert y.grad == 1
        assert a.grad == B + B and b.grad == A + A


def test_shared_subexpression_gets_the_sum_of_its_uses(engine):
    with engine.graph():
        a, b = engine.Value(A), engine.Value(B)
        c = a * b
        d = c + c * C
        d.backward()
        assert c.grad == 1 + C * 1
        assert a.grad == B * c.grad and b.grad == A * c.grad


def _spec_backward(root, key_of):
    """The reference's backward, written out here over the public introspection:
    recursive depth-first post-order, children in order, then the reverse sweep."""
    topo, visited = [], set()

    def build(v):
        if key_of(v) not in visited:
            visited.add(key_of(v))
            for child in v._children:
                build(child)
            topo.append(v)

    build(root)
    grads = {key_of(root): 1.0}
    for v in reversed(topo):
        gv = grads.get(key_of(v), 0.0)
        for child, lg in zip(v._children, v._local_grads):
            k = key_of(child)
            grads[k] = grads.get(k, 0) + lg * gv
    return topo, grads


def test_backward_order_is_the_reference_order(engine):
    """Gradients accumulate in the reference's depth-first order: this graph reuses nodes
    across depths, so any other order rounds differently (checked with ==)."""
    import random
    rng = random.Random(7)
    with engine.graph():
        leaves = [engine.Value(rng.uniform(-1, 1)) for _ in range(6)]
        pool = list(leaves)
        for i in range(60):
            x, y = rng.choice(pool), rng.choice(pool)
            op = i % 4
            pool.append(x * y if op == 0 else x + y if op == 1 else (x * 0.3).relu() * y if op == 2 else x - y)
        root = sum(pool[-20:])
        topo, want = _spec_backward(root, lambda v: key(engine, v))
        root.backward()
        for v in topo:
            assert v.grad == want[key(engine, v)]


@pytest.mark.parametrize("link, x0, want", [
    (lambda y, x: y + x, 1.0, (50_001, 50_001)),  # binary: x feeds every link, grad n + 1
    (lambda y, x: y.relu(), 0.5, (0.5, 1.0)),      # unary: a chain of one child each
], ids=["binary", "unary"])
def test_deep_chain_backward_needs_no_recursion(engine, link, x0, want):
    with engine.graph():
        x = engine.Value(x0)
        y = x
        for _ in range(50_000):
            y = link(y, x)
        y.backward()
        assert (y.data, x.grad) == want
        del y


def test_deep_chain_of_unary_ops(engine):
    n = 50_000
    with engine.graph():
        x = engine.Value(0.5)
        y = x
        for _ in range(n):
            y = y.relu()
        y.backward()
        assert y.data == 0.5 and x.grad == 1.0
        del y


# ---------------------------------------------------------------- invalid operations

INVALID = [
    ("log(0)", lambda V: V(0.0).log(), ValueError),
    ("log(int 0)", lambda V: V(0).log(), ValueError),
    ("log(-0.0)", lambda V: V(-0.0).log(), ValueError),
    ("log(-1)", lambda V: V(-1.0).log(), ValueError),
    ("log(-inf)", lambda V: V(float("-inf")).log(), ValueError),
    ("exp(1000)", lambda V: V(1000.0).exp(), OverflowError),
    ("Value(0) ** -1", lambda V: V(0) ** -1, ZeroDivisionError),
    ("Value(0.0) ** -2.5", lambda V: V(0.0) ** -2.5, ZeroDivisionError),
    ("Value(-0.0) ** -1", lambda V: V(-0.0) ** -1, ZeroDivisionError),
    ("Value(0.0) ** 0.5", lambda V: V(0.0) ** 0.5, ZeroDivisionError),   # local grad 0.0 ** -0.5
    ("Value(0.0) ** 0", lambda V: V(0.0) ** 0, ZeroDivisionError),       # local grad 0 * 0.0 ** -1
    ("Value(-2) ** 0.5", lambda V: V(-2) ** 0.5, ValueError),
    ("Value(-2.0) ** -1.5", lambda V: V(-2.0) ** -1.5, ValueError),
    ("Value(10.0) ** 400", lambda V: V(10.0) ** 400, OverflowError),
    ("Value(1e-300) ** -0.5", lambda V: V(1e-300) ** -0.5, OverflowError),  # the local grad overflows
    ("Value ** Value", lambda V: V(2.0) ** V(3.0), TypeError),
    ("pow with modulus", lambda V: pow(V(2.0), 2, 3), TypeError),
    ("a / 0", lambda V: V(1.0) / 0, ZeroDivisionError),
    ("a / 0.0", lambda V: V(1.0) / 0.0, ZeroDivisionError),
    ("a / Value(0)", lambda V: V(1.0) / V(0.0), ZeroDivisionError),
    ("c / Value(0)", lambda V: 1 / V(0.0), ZeroDivisionError),
    ("Value + 'x'", lambda V: V(1.0) + "x", TypeError),
    ("'x' + Value", lambda V: "x" + V(1.0), TypeError),
    ("Value * 'x'", lambda V: V(1.0) * "x", TypeError),
    ("Value - None", lambda V: V(1.0) - None, TypeError),
    ("Value ** 'x'", lambda V: V(1.0) ** "x", TypeError),
]


@pytest.mark.parametrize("name, op, exc", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_operation_raises(engine, name, op, exc):
    """The reference's error, said with its words where they are the arithmetic's:
    a float power's overflow is OverflowError(34, '...out of range'), exp's is
    'math range error' (a TypeError's words are the class's own)."""
    with pytest.raises(exc) as spec:
        op(get_pure().Value)
    with engine.graph():
        with pytest.raises(exc) as got:
            op(engine.Value)
    if exc is not TypeError:
        assert got.value.args == spec.value.args


def get_pure():
    from microgpt import get_engine
    return get_engine("pure")


def test_math_edge_values_do_not_raise(engine):
    """What the reference computes without an error, both engines compute too."""
    inf, nan = float("inf"), float("nan")
    V = engine.Value
    with engine.graph():
        assert V(inf).exp().data == inf
        assert V(-inf).exp().data == 0.0
        assert V(inf).log().data == inf and V(inf).log()._local_grads[0] == 0.0
        assert math.isnan(V(nan).log().data) and math.isnan(V(nan).exp().data)
        assert V(-1000.0).exp().data == 0.0
        assert (V(1e300) * 1e300).data == inf
        assert math.isnan((V(inf) - inf).data)
        assert (V(1e-300) ** 2).data == 0.0
        assert same_float((V(-0.0) ** 3).data, -0.0)
        assert (V(-8.0) ** 3.0).data == -512.0  # a negative base with an integral float exponent


# ---------------------------------------------------------------- finite differences

def numeric_grad(f, xs, i):
    x = xs[i]
    h = 1e-6 * max(1.0, abs(x))
    up = list(xs); up[i] = x + h
    dn = list(xs); dn[i] = x - h
    return (f(up) - f(dn)) / (2 * h)


FD_CASES = {
    "a + b": (lambda a, b: a + b, [0.7, -1.3]),
    "a - b": (lambda a, b: a - b, [0.7, -1.3]),
    "a * b": (lambda a, b: a * b, [0.7, -1.3]),
    "a / b": (lambda a, b: a / b, [0.7, -1.3]),
    "a * a": (lambda a, b: a * a + b, [0.7, -1.3]),
    "a / a": (lambda a, b: a / (a * b), [0.7, -1.3]),
    "c + a": (lambda a, b: 2 + a * b, [0.7, -1.3]),
    "c - a": (lambda a, b: 2.5 - a * b, [0.7, -1.3]),
    "c * a": (lambda a, b: 3 * a * b, [0.7, -1.3]),
    "c / a": (lambda a, b: 2 / (a * b), [0.7, -1.3]),
    "a - c": (lambda a, b: a * b - 4, [0.7, -1.3]),
    "a / c": (lambda a, b: a * b / 3, [0.7, -1.3]),
    "-a": (lambda a, b: -(a * b), [0.7, -1.3]),
    "a ** 2": (lambda a, b: (a * b) ** 2, [0.7, -1.3]),
    "a ** 3.0": (lambda a, b: (a + b) ** 3.0, [0.7, -1.3]),
    "a ** 0.5": (lambda a, b: (a * a + b * b) ** 0.5, [0.7, -1.3]),
    "a ** -1": (lambda a, b: (a * b) ** -1, [0.7, -1.3]),
    "a ** -0.5": (lambda a, b: (a * a + b * b) ** -0.5, [0.7, -1.3]),
    "a ** 1.7": (lambda a, b: (a * a + b * b) ** 1.7, [0.7, -1.3]),
    "log": (lambda a, b: (a * a + b * b).log(), [0.7, -1.3]),
    "exp": (lambda a, b: (a * b).exp(), [0.7, -1.3]),
    "relu +": (lambda a, b: (a * b + 2).relu(), [0.7, -1.3]),
    "relu -": (lambda a, b: (a * b).relu() + a, [0.7, -1.3]),
    "sum": (lambda a, b: sum([a, b, a * b]), [0.7, -1.3]),
    "softmax-ish": (lambda a, b: -((a.exp() / (a.exp() + b.exp())).log()), [0.7, -1.3]),
    "rmsnorm-ish": (lambda a, b: a * ((a * a + b * b) / 2 + 1e-5) ** -0.5, [0.7, -1.3]),
}


@pytest.mark.parametrize("expr", list(FD_CASES))
def test_gradient_matches_finite_differences(engine, expr):
    f, xs = FD_CASES[expr]

    def forward(values):
        with engine.graph():
            return f(*[engine.Value(x) for x in values]).data

    with engine.graph():
        leaves = [engine.Value(x) for x in xs]
        out = f(*leaves)
        out.backward()
        analytic = [v.grad for v in leaves]
    for i in range(len(xs)):
        assert analytic[i] == pytest.approx(numeric_grad(forward, xs, i), rel=1e-6, abs=1e-9), (expr, i)

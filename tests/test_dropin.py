"""`from microgpt import Value, graph, Adam`: the drop-in import, used as user scripts use it.

The names are bound when the package is imported, to the engine $MICROGPT_ENGINE (else auto)
picks; each case runs in a fresh interpreter so the environment is read at import.
"""
import subprocess
import sys
import textwrap

import pytest

import microgpt
from microgpt import available_engines, get_engine

from support import PACKAGE_PARENT, child_env

HAS_COMPILED = "compiled" in available_engines()
needs_compiled = pytest.mark.skipif(not HAS_COMPILED, reason="the compiled engine is not built here")


def python(code, env_engine=None):
    """Run code in a fresh interpreter that imports the microgpt these tests
    imported (started in its folder: `python -c` puts the working directory
    first on sys.path, where a source checkout would shadow it)."""
    env = child_env()
    env.pop("MICROGPT_ENGINE", None)
    if env_engine is not None:
        env["MICROGPT_ENGINE"] = env_engine
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=PACKAGE_PARENT)


def test_bound_in_this_process_to_the_picked_engine():
    eng = get_engine(None)  # the suite runs with the environment it was started with
    assert (microgpt.Value, microgpt.graph, microgpt.Adam) == (eng.Value, eng.graph, eng.Adam)


@pytest.mark.parametrize("env, name", [(None, "replay" if HAS_COMPILED else "pure"), ("auto", None),
                                       ("pure", "pure"), pytest.param("compiled", "compiled", marks=needs_compiled),
                                       pytest.param("replay", "replay", marks=needs_compiled)])
def test_bound_at_import_from_the_environment(env, name):
    r = python("""
        from microgpt import Value, graph, Adam, get_engine
        eng = get_engine(None)
        assert (Value, graph, Adam) == (eng.Value, eng.graph, eng.Adam), eng
        print(eng.name)
    """, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (name or get_engine("auto").name)


def test_a_bad_environment_fails_only_the_drop_in_names():
    r = python("""
        import microgpt                      # the package (and its CLI) still imports
        from microgpt import get_engine, EngineError
        try:
            from microgpt import Value
        except EngineError as e:
            print("EngineError", e)
    """, "bogus")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("EngineError microgpt.Value: unknown engine 'bogus'")


def test_the_engine_submodule_is_not_shadowed():
    import microgpt.engine
    assert microgpt.engine.get_engine is get_engine


# A user's script, written against its own Value class and then swapped to the drop-in
# import: a small MLP with relu, trained with SGD, no graph() scope, ints in its arithmetic.
USER_SCRIPT = """
import random
{import_line}

random.seed(7)
class Neuron:
    def __init__(self, nin):
        self.w = [Value(random.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0)
    def __call__(self, x):
        return sum((wi * xi for wi, xi in zip(self.w, x)), self.b).relu()
    def parameters(self):
        return self.w + [self.b]

layer1 = [Neuron(3) for _ in range(4)]
out = Neuron(4)
params = [p for n in layer1 + [out] for p in n.parameters()]
xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
ys = [1.0, -1.0, -1.0, 1.0]
for step in range(20):
    preds = [out([n(x) for n in layer1]) for x in xs]
    loss = sum((p - y) ** 2 for p, y in zip(preds, ys))
    for p in params:
        p.grad = 0
    loss.backward()
    for p in params:
        p.data += -0.05 * p.grad
    print(repr(loss.data), [repr(p.data) for p in params])
"""


@pytest.mark.parametrize("env", ["pure"] + (["compiled", "replay"] if HAS_COMPILED else []))
def test_a_user_script_gives_the_same_numbers_after_the_one_line_swap(env):
    own = python(USER_SCRIPT.format(import_line="from microgpt._pure import Value"))
    swapped = python(USER_SCRIPT.format(import_line="from microgpt import Value"), env)
    assert own.returncode == 0 and swapped.returncode == 0, (own.stderr, swapped.stderr)
    assert own.stdout == swapped.stdout
    assert len(own.stdout.splitlines()) == 20


# ---------------------------------------------------------------- user-defined operations

PURE = get_engine("pure")
ENGINES = [PURE] + ([get_engine("compiled")] if HAS_COMPILED else [])


def bits(x):
    import struct
    return struct.pack("<d", x)


def custom_graph(V):
    """tanh written as the reference's class allows, a 3-child custom node and a 0.5-weighted
    repeat of one child, then used by ordinary operations; everything that backward sums."""
    import math
    x, y, w = V(0.7), V(-1.3), V(2.0 / 3.0)
    t = math.tanh(x.data * w.data)
    h = V(t, (x, w), (w.data * (1 - t ** 2), x.data * (1 - t ** 2)))
    s = V(x.data + 2 * y.data + h.data, (x, y, h, y), (1.0, 1.0, 1.0, 1.0))
    q = V(s.data ** 2, (s,), (2 * s.data,))
    out = (q * h + y).exp().log() / 3
    out.backward()
    nodes = [x, y, w, h, s, q, out]
    return [(n.data, n.grad, n._local_grads) for n in nodes], [len(n._children) for n in nodes]


@pytest.mark.parametrize("V", [e.Value for e in ENGINES[1:]])
def test_user_defined_operations_match_the_pure_engine_bit_for_bit(V):
    want, want_arity = custom_graph(PURE.Value)
    with get_engine("compiled").graph():
        got, arity = custom_graph(V)
    assert arity == want_arity == [0, 0, 0, 2, 4, 1, 2]
    for (pd, pg, plg), (cd, cg, clg) in zip(want, got):
        assert bits(pd) == bits(cd) and bits(pg) == bits(cg)
        assert [bits(a) for a in plg] == [bits(b) for b in clg]


@needs_compiled
def test_a_user_defined_node_is_custom_and_keeps_its_children():
    eng = get_engine("compiled")
    with eng.graph():
        a, b = eng.Value(1.0), eng.Value(2.0)
        n = eng.Value(5.0, [a, b, a], [0.25, 0.5, 0.75])
        assert n.op == "custom"
        assert [c.node for c in n._children] == [a.node, b.node, a.node]
        assert n._local_grads == (0.25, 0.5, 0.75)
        n.backward()
        assert (a.grad, b.grad, n.grad) == (1.0, 0.5, 1)
        assert eng.Value(3.0, (), ()).op == "leaf"
        with pytest.raises(ValueError, match="cannot be recomputed"):
            a.arena.replay(a.node)


@needs_compiled
def test_user_defined_operations_refuse_what_they_cannot_do():
    from microgpt import ArenaMismatchError, StaleValueError
    eng = get_engine("compiled")
    a = eng.Value(1.0)
    before = len(a.arena)
    with pytest.raises(ValueError, match="2 children needs as many local grads, got 1"):
        eng.Value(1.0, (a, a), (1.0,))
    with pytest.raises(TypeError, match="compiled Values"):
        eng.Value(1.0, (a, PURE.Value(1.0)), (1.0, 1.0))
    with pytest.raises(TypeError, match="compiled Values"):
        eng.Value(1.0, (a, 2.0), (1.0, 1.0))
    with pytest.raises(TypeError):
        eng.Value(1.0, (a,), ("x",))
    with pytest.raises(ArenaMismatchError):
        eng.Value(1.0, (a, eng.Arena().value(1.0)), (1.0, 1.0))
    with eng.graph():
        gone = eng.Value(1.0)
    with pytest.raises(StaleValueError):
        eng.Value(1.0, (a, gone), (1.0, 1.0))
    assert len(a.arena) == before  # nothing appended by a refused operation


# ---------------------------------------------------------------- ints, as the pure engine keeps them

INT_CASES = {
    "leaf": lambda V: V(2),
    "leaf float": lambda V: V(2.0),
    "int + int": lambda V: V(2) + 3,
    "int + float": lambda V: V(2) + 0.5,
    "int * int": lambda V: V(2) * V(-3),
    "int * float": lambda V: 1.5 * V(2),
    "relu of a negative float": lambda V: V(-1.5).relu(),
    "relu of nan": lambda V: V(float("nan")).relu(),
    "relu of -0.0": lambda V: V(-0.0).relu(),
    "relu of a positive int": lambda V: V(3).relu(),
    "relu of a positive float": lambda V: V(3.0).relu(),
    "negated int zero": lambda V: -V(0),
    "int zero times a negative int": lambda V: V(0) * -4,
    "negated relu zero": lambda V: -V(-2.0).relu(),
    "int zero plus -0.0": lambda V: -V(0) + -0.0,
    "int ** int": lambda V: V(-3) ** 3,
    "int ** 0": lambda V: V(5) ** 0,
    "int ** negative int": lambda V: V(2) ** -2,
    "int ** float": lambda V: V(4) ** 0.5,
    "float ** int": lambda V: V(2.0) ** 2,
    "log and exp": lambda V: V(1).exp().log(),
    "division of ints": lambda V: V(6) / V(3),
    "sum from Value(0)": lambda V: sum([V(1), V(2), V(3)]),
    "bool": lambda V: V(True) * 2,
}


def describe(v, walk=True):
    """Each number of the node and its children, as (type, bits)."""
    def num(x):
        return (int if isinstance(x, int) else type(x), bits(x))
    out = [num(v.data), num(v.grad)] + [num(g) for g in v._local_grads]
    if walk:
        out += [describe(c, False) for c in v._children]
    return out


@needs_compiled
@pytest.mark.parametrize("case", list(INT_CASES))
def test_ints_are_the_pure_engines(case):
    build, eng = INT_CASES[case], get_engine("compiled")
    p = build(PURE.Value)
    with eng.graph():
        c = build(eng.Value)
        assert repr(c) == repr(p).replace("True", "1")
        assert describe(c) == describe(p)
        p.backward()
        c.backward()
        assert describe(c) == describe(p)
        p.backward()  # again: the root's grad is the int 1 once more, the rest accumulate
        c.backward()
        assert describe(c) == describe(p)


@needs_compiled
def test_int_grads_turn_float_where_a_float_reaches_them():
    eng = get_engine("compiled")
    for V in (PURE.Value, eng.Value):
        with eng.graph():
            a, b, w = V(2), V(3), V(0.5)
            y = a * b + (a * w).relu()  # b only meets ints; a meets the float w
            y.backward()
            assert (type(a.grad), type(b.grad), type(w.grad), type(y.grad)) == (float, int, float, int)
            assert (a.grad, b.grad, w.grad) == (3.5, 2, 2.0)


@needs_compiled
def test_writes_set_the_type_and_adam_leaves_int_zero_grads():
    eng = get_engine("compiled")
    for E in (PURE, eng):
        p = E.Value(1.0)
        p.data = 3
        assert type(p.data) is int and p.data == 3
        p.data = 3.5
        assert type(p.data) is float
        p.grad = 0.25
        assert type(p.grad) is float
        q = E.Value(2)
        q.grad = 1
        E.Adam([p, q], beta1=0.85, beta2=0.99, eps=1e-8).step(0.01, 0)
        assert [type(p.data), type(p.grad), type(q.data), type(q.grad)] == [float, int, float, int]


@needs_compiled
def test_arena_replay_retypes_what_it_recomputes():
    eng = get_engine("compiled")
    arena = eng.Arena()
    x = arena.value(-2.0)
    mark = arena.mark()
    y = x.relu() * 3
    assert (y.data, type(y.data)) == (0, int)
    x.data = 1.5
    arena.replay(mark)
    assert (y.data, type(y.data)) == (4.5, float)
    x.data = 2
    arena.replay(mark)
    assert (y.data, type(y.data)) == (6, int)
    assert type(y.grad) is int


# ---------------------------------------------------------------- copies and pickles

@needs_compiled
@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
@pytest.mark.parametrize("data, grad", [(2, 0), (-0.0, 0.5), (float("nan"), float("-inf")), (1e-300, -3)])
def test_copies_are_detached_leaves_with_the_same_numbers(how, data, grad):
    import copy
    import math
    import pickle
    eng = get_engine("compiled")
    make = {"copy": copy.copy, "deepcopy": copy.deepcopy,
            "pickle": lambda v: pickle.loads(pickle.dumps(v))}[how]
    arena = eng.Arena()  # an arena of its own: the copy lands in the default one
    with arena.graph():
        x = arena.value(data) * (1 if isinstance(data, int) else 1.0)  # a node, not a leaf
        x.grad = grad
        y = make(x)
    # the copy outlived the scope that released the original
    assert y.arena is eng.default_arena() and y.op == "leaf" and y._children == ()
    for got, want in ((y.data, data), (y.grad, grad)):
        assert type(got) is type(want)
        assert bits(got) == bits(want) or (math.isnan(got) and math.isnan(want))
    with pytest.raises(eng.StaleValueError):
        copy.copy(x)


# ---------------------------------------------------------------- one object per node

def user_backward(root):
    """The reference's own backward, with a set of Values: identity is what it relies on."""
    topo, seen = [], set()

    def build(v):
        if v not in seen:
            seen.add(v)
            for c in v._children:
                build(c)
            topo.append(v)
    build(root)
    root.grad = 1
    for v in reversed(topo):
        for c, g in zip(v._children, v._local_grads):
            c.grad += g * v.grad
    return len(topo)


@pytest.mark.parametrize("eng", ENGINES, ids=lambda e: e.name)
def test_a_graph_walk_with_a_set_of_values(eng):
    x, y = eng.Value(2.0), eng.Value(3.0)
    z = x * y + x
    w = z * z + z
    assert user_backward(w) == 6
    assert (x.grad, y.grad) == (68.0, 34.0)
    a = eng.Value(1.0)
    for _ in range(20):
        a = a + a
    assert user_backward(a) == 21  # each node once, not 2**21 visits


@needs_compiled
def test_one_object_per_node_while_a_handle_lives():
    eng = get_engine("compiled")
    arena = eng.Arena()  # its own: rows are reused as below only while nothing is reclaimed
    a = arena.value(1.0)
    b = a + 1
    assert b._children[0] is a and b._children[1] is b._children[1]
    assert {a, b._children[0], b} == {a, b} and b._children[0] == a and hash(b._children[0]) == hash(a)
    assert b._children[1] != a
    with arena.graph():
        t = a * 2
        k = t._children[1]
        assert t._children[1] is k
        t_node = t.node
    # t and k are stale; the nodes made next reuse their indices with new objects
    u = a * 3
    assert u.node == t_node and u is not t and u._children[1] is not k
    with pytest.raises(eng.StaleValueError):
        t.data
    assert u._children[1].data == 3
    # a handle that was dropped is made again, once, when asked for
    c = arena.value(5.0)
    d = c * c
    node = d._children[1].node
    del c
    again = d._children[0]
    assert again.node == node and again is d._children[1] and again.data == 5.0


@needs_compiled
def test_identity_survives_growth_reuse_and_reinit():
    import gc
    eng = get_engine("compiled")
    arena = eng.Arena()
    keep = [arena.value(float(i)) for i in range(3000)]  # grows the arena and its handle table
    s = keep[0]
    for v in keep[1:]:
        s = s + v
    node, seen = s, []
    while node._children:
        seen.append(node._children[1])
        node = node._children[0]
    assert node is keep[0] and all(x is y for x, y in zip(reversed(seen), keep[1:]))
    for _ in range(3):
        mark = arena.mark()
        tmp = [keep[i] * 2.0 for i in range(0, 3000, 7)]
        assert all(t._children[0] is keep[i] for t, i in zip(tmp, range(0, 3000, 7)))
        del tmp
        gc.collect()
        arena.release(mark)
    v = eng.Value(1.0)
    first = v.node
    v.__init__(2.0)  # a live handle moved to a new node: the old node gets a new handle
    w = v * 1
    assert w._children[0] is v and v.node != first

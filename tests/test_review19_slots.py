"""Issue 19's per-operation path (_slots.pxi, _handles.pxi, _fields.pxi, arena.h
arena_try_binary) attacked from outside: free handles all holding the default arena,
its two-handle path, two_handles_elsewhere, int op int, .grad's setter. Oracles:
sys.getrefcount (free list full before and after), the pure engine bit for bit."""
import copy
import gc
import itertools
import math
import random
import struct
import sys
import threading

import pytest

from microgpt import ArenaMismatchError, StaleValueError, available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)
compiled, pure = get_engine("compiled"), get_engine("pure")

FREE = 8192  # _handles.pxi FREE_HANDLES


def fill_free_list():
    """The free list full (8192 handles, each holding the default arena), the rest freed."""
    [compiled.Value(0.5) for _ in range(2 * FREE)]
    gc.collect()


def default_refs_kept(run):
    """run() leaves the default arena's reference count as it found it (the free
    list full before and after: as many of its references each time)."""
    default = compiled.default_arena()
    fill_free_list()
    before = sys.getrefcount(default)
    run()
    gc.collect()
    fill_free_list()
    return sys.getrefcount(default) == before


def bits(x):
    """A number's type and, for a float, its bits."""
    if type(x) is bool:  # README: a bool becomes the int 1 or 0 (the pure engine keeps it)
        return (int, int(x))
    if type(x) is float:
        if math.isnan(x):  # a nan's sign is the compiler's pick (tests/support.py: nans alike)
            return (float, "nan")
        return (float, struct.pack("<d", x))
    return (type(x), x)


def same(got, want):  # data and grad alike
    return (bits(got.data), bits(got.grad)) == (bits(want.data), bits(want.grad))


def churn(other, big):
    """Every way a handle is taken and given back, or refused."""
    x, y, i = compiled.Value(1.5), compiled.Value(-2.0), compiled.Value(3)
    p, q, j = other.value(0.75), other.value(4.0), other.value(-5)
    for _ in range(2000):
        z = (x * y + x - 1.0) / y + 2 * x + 0 + i * i + i  # i * i: the generic slot
        w = (p * q + p - 1) / q + 3 * p + j * j
        assert z._children[0] is not None and w._children[0] is not None and copy.copy(z)
        for bad in (lambda: big * big, lambda: other.value(2 ** 600) * other.value(2 ** 600),
                    lambda: x * p, lambda: compiled.Value.__new__(compiled.Value) + x):
            with pytest.raises((OverflowError, ArenaMismatchError, StaleValueError)):
                bad()


def test_default_arena_refcount_is_balanced_over_every_handle_path():
    other, big = compiled.Arena(), compiled.Value(2 ** 600)
    before = sys.getrefcount(other)
    assert default_refs_kept(lambda: [churn(other, big) for _ in range(5)])
    assert sys.getrefcount(other) == before


@pytest.mark.parametrize("free_list", ["full", "empty"])
def test_explicit_arenas_get_back_every_reference_their_dead_handles_held(free_list):
    arenas = [compiled.Arena() for _ in range(3)]
    base = [sys.getrefcount(a) for a in arenas]

    def run():
        held = [compiled.Value(1.0) for _ in range(FREE + 10)] if free_list == "empty" else []
        vs = [arenas[k % 3].value(float(k)) for k in range(3 * FREE)]  # more than the list takes
        prods = [v * v + v for v in vs[:FREE]]
        assert all(sys.getrefcount(a) > b + FREE for a, b in zip(arenas, base))
        del vs[::2], prods[1::2], held
        del vs, prods
        gc.collect()
        assert [sys.getrefcount(a) for a in arenas] == base
    assert default_refs_kept(run)


def test_a_live_handle_moved_between_arenas_by_init_moves_its_reference():
    other = compiled.Arena()
    base = sys.getrefcount(other)

    def run():
        v, w, u = other.value(2.0), other.value(3.0), compiled.Value(1.0)
        v.__init__(5.0), u.__init__(7.0, (w,), (2.0,))  # into the default arena; a custom node of other
        assert sys.getrefcount(other) == base + 2  # (apart: pytest would hold u.arena meanwhile)
        assert v.arena is compiled.default_arena() and u.arena is other
        assert (v * v).data == 25.0 and (u * w).data == 21.0
    assert default_refs_kept(run)
    assert sys.getrefcount(other) == base


def program(rng, xs):
    """The values a random program over xs makes (the same for a same rng state)."""
    vals = list(xs)
    forms = [lambda a, b, c: a + b, lambda a, b, c: a * b, lambda a, b, c: a * c,
             lambda a, b, c: c + a, lambda a, b, c: a - c, lambda a, b, c: c * a,
             lambda a, b, c: a / b if b.data not in (0, 0.0) else a + b,
             lambda a, b, c: a / 2.0, lambda a, b, c: a + a * b]
    for _ in range(60):
        a, b = rng.choice(vals), rng.choice(vals)
        r = rng.choice(forms)(a, b, rng.choice([0, 1, -1, 2, 0.5, -0.0, 3.0, True]))
        if abs(r.data) < 1e100:
            vals.append(r)
    return vals


def compare_programs(make_compiled, seed, START=(3, -1, 0, 2.5, -0.0, 0.0, -2, 1, float("nan"), 7)):
    got = program(random.Random(seed), [make_compiled(x) for x in START])
    want = program(random.Random(seed), [pure.Value(x) for x in START])
    assert [bits(g.data) for g in got] == [bits(w.data) for w in want]
    got[-1].backward()
    want[-1].backward()
    assert all(same(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("seed", range(6))
def test_foreign_handles_at_high_rows_on_a_full_free_list_serve_default_programs_bit_exact(seed):
    fill_free_list()
    other = compiled.Arena()
    [other.value(1.0) for _ in range(120000)]  # rows far beyond the default arena's: now
    del other  # the free list holds that arena's handles (at row 0), and it is freed
    compare_programs(compiled.Value, seed)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("where", ["default", "explicit", "explicit, free list full"])
def test_an_empty_free_list_sends_programs_through_the_generic_path_bit_exact(seed, where):
    fill_free_list()
    held = [compiled.Value(1.0) for _ in range(FREE + 100)] if "full" not in where else []
    compare_programs(compiled.Value if where == "default" else compiled.Arena().value, seed)
    assert len(held) in (0, FREE + 100)


@pytest.mark.parametrize("make", ["default", "explicit"])
def test_int_op_int_signs_bools_and_nan_match_the_pure_engine(make):
    other = compiled.Arena()
    V = compiled.Value if make == "default" else other.value
    nums = [0, -1, 1, 3, True, False, 0.0, -0.0, float("nan"), float("inf"), -2.5]
    forms = [lambda W, a, b: W(a) * W(b), lambda W, a, b: W(a) + W(b), lambda W, a, b: W(a) * b,
             lambda W, a, b: a * W(b), lambda W, a, b: W(a) + b, lambda W, a, b: a + W(b),
             lambda W, a, b: W(a) - b, lambda W, a, b: W(a) * W(b) * W(b)]
    for a, b, (k, form) in itertools.product(nums, nums, enumerate(forms)):
        got, want = form(V, a, b), form(pure.Value, a, b)
        assert bits(got.data) == bits(want.data), (k, a, b, got, want)
        assert [bits(g) for g in got._local_grads] == [bits(g) for g in want._local_grads], (k, a, b)


@pytest.mark.parametrize("where", ["default", "explicit"])
def test_int_beyond_a_double_in_either_arena_is_refused_with_nothing_appended_and_counts_kept(where):
    other = compiled.Arena()
    arena, V = (compiled.default_arena(), compiled.Value) if where == "default" else (other, other.value)
    before = sys.getrefcount(other)

    def run():
        a, b = V(2 ** 1000), V(2 ** 30)
        n = len(arena)
        for _ in range(300):
            for bad in (lambda: a * a, lambda: a * b * b, lambda: a + 2 ** 1024, lambda: a * 2 ** 600):
                with pytest.raises(OverflowError):
                    bad()
            assert len(arena) == n  # (a * b is beyond a double too)
        assert type((a + a).data) is int and (a + a).data == 2 ** 1001  # an int sum a double holds
    assert default_refs_kept(run) and sys.getrefcount(other) == before


def test_an_arena_growing_or_reclaiming_in_the_middle_of_an_operation_keeps_the_operands():
    other = compiled.Arena()
    x, y, i = other.value(1.25), other.value(-3.0), other.value(6)
    for k in range(3):
        while len(other) < other.capacity - k - 1:
            x * 1.0  # garbage no handle names: a reclaim frees it and moves x, y, i down
        results = [x * y, x + y, x * 2, x - 1, x / y, i * i, i + i, y / 4.0]
        want = [1.25 * -3.0, 1.25 - 3.0, 2.5, 0.25, 1.25 * (-3.0) ** -1, 36, 12, -0.75]
        assert [bits(r.data) for r in results + [x, y, i]] == [bits(w) for w in want + [1.25, -3.0, 6]]
        assert all(r._children[0] is x for r in results[:5])


def test_the_grad_setter_keeps_the_data_tag_and_types_as_the_pure_engine():
    for V, P in ((compiled.Value, pure.Value), (compiled.Arena().value, pure.Value)):
        c, p = V(3), P(3)
        for g in (0.5, 0, -0.0, 0, float("nan"), 0, 2.0, 0):
            c.grad, p.grad = g, g
            assert bits(c.grad) == bits(p.grad) and bits(c.data) == bits(p.data)
        d, q = V(2.0), P(2.0)
        d.grad, q.grad = 0, 0
        (e := c * d + d).backward(), (f := p * q + q).backward()
        assert same(c, p) and same(d, q) and same(e, f)


def test_stale_handles_after_a_scope_raise_in_every_slot_with_foreign_handles_free():
    other = compiled.Arena()
    [other.value(1.0) for _ in range(FREE)]  # the free list: that arena's handles, at row 0
    live = compiled.Value(2.0)
    with compiled.graph():
        stale = compiled.Value(1.0) * live
    with other.graph():
        ostale = other.value(4.0) * 2.0
    for s in (stale, ostale):
        for op in (lambda: s + s, lambda: s * s, lambda: s + 1.0, lambda: 2 * s, lambda: s - 1,
                   lambda: s / s, lambda: s / 2.0, lambda: s + live, lambda: live * s):
            with pytest.raises((StaleValueError, ArenaMismatchError)):
                op()
        for g in (0.0, 0):
            with pytest.raises(StaleValueError):
                setattr(s, "grad", g)
    assert (live * live).data == 4.0


def test_threads_each_with_an_arena_and_the_default_keep_counts_and_values():
    wrong = []

    def work(seed):
        arena, rng = compiled.Arena(), random.Random(seed)
        for _ in range(300):
            a, b = arena.value(rng.random()), arena.value(rng.random())
            ea, eb, c = a.data, b.data, compiled.Value(b.data)
            got = ((a * b + a).data, (a / b - 1.0).data, (c * c + c).data)
            if got != (ea * eb + ea, ea * eb ** -1 + -1.0, eb * eb + eb):
                wrong.append(got)

    def run():
        ts = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        all(t.start() or True for t in ts) and all(t.join() or True for t in ts)
    assert default_refs_kept(run) and wrong == []


def test_top_drops_and_a_reclaim_of_the_default_arena_with_foreign_handles_on_the_free_list():
    default = compiled.default_arena()
    x, p, extra = compiled.Value(1.5), pure.Value(1.5), compiled.Value(0.0)
    other = compiled.Arena()
    junk = [other.value(1.0) * 2.0 for _ in range(3 * FREE)]
    del junk, other  # a full free list of the other arena's handles, at row 0
    y = x
    for _ in range(3 * FREE):  # each takes two free handles and gives two back: one short
        y = y * 1.0 + x
    n = len(default)
    del extra  # the free list full again (its row is not the top: nothing dropped)
    assert len(default) == n > x.node + 9 * FREE
    del y  # the top's handle, released with the free list full (release_handle): a drop
    assert len(default) == x.node + 1  # (a reclaim on the way may have moved x down)
    keep = [x * float(k) for k in range(100)]
    for _ in range(2000):
        x * x  # garbage under the live products
    default.reclaim()
    assert [bits(v.data) for v in keep] == [bits(1.5 * k) for k in range(100)]
    assert all(v._children[0] is x for v in keep)
    (keep[-1] + x).backward(), (p * 99.0 + p).backward()
    assert bits(x.grad) == bits(p.grad)


def test_an_arena_subclass_whose_del_makes_values_while_its_last_handle_is_released():
    seen = []

    class Noisy(compiled.Arena):
        def __del__(self):  # runs inside release_handle, the handle not yet on the free list
            seen.append(sum((v * v).data for v in [compiled.Value(float(k)) for k in range(2 * FREE)][:50]))

    def run():
        for r in range(10):
            arena = Noisy()
            vs = [arena.value(float(k)) for k in range(FREE + 10 if r % 2 else 10)]
            w = vs[0] * vs[-1]
            del arena, vs, w  # w: the last handle of the arena
    assert default_refs_kept(run)
    assert seen == [sum(float(k * k) for k in range(50))] * 10
    assert [(compiled.Value(2.0) * float(k)).data for k in range(3)] == [0.0, 2.0, 4.0]


def test_init_moving_a_handle_keeps_its_new_node_when_the_old_arenas_del_drops_the_top():
    """Value.__init__ appends the node, drops the old arena (self.arena = arena),
    then notes the handle: a __del__ run by that drop sees the node unnamed."""
    class Dropper(compiled.Arena):
        def __del__(self):  # each product's handle dies on top: drop_top takes the new node
            for _ in range(600):
                compiled.Value(9.0) * 1.0

    v = Dropper().value(1.0)  # v holds the arena's last reference
    v.__init__(5.0)
    w = compiled.Value(2.0)
    assert v.node < len(compiled.default_arena()) and w.node != v.node
    assert v.data == 5.0 and (v * w).data == 10.0

"""The type's add and multiply slots where they hand over to the generic path
(microgpt/_slots.pxi, src/arena.h arena_try_binary), and the free list of handles
every one of which holds the default arena (microgpt/_handles.pxi): int op int,
which the fast path leaves to the generic one, gives the pure engine's ints and
refuses an int beyond a double; another arena's handles go through the free list
and come back as the default arena's."""
import gc
import sys

import pytest

from microgpt import available_engines, get_engine

pytestmark = pytest.mark.skipif("compiled" not in available_engines(), reason="the compiled engine is not built here")

BIG = 2 ** 600  # a double holds it; its square it does not


@pytest.mark.parametrize("where", ["default", "explicit"])
def test_int_op_int_takes_the_generic_path_with_the_pure_engines_numbers(where):
    compiled, pure = get_engine("compiled"), get_engine("pure")
    arena = compiled.default_arena() if where == "default" else compiled.Arena()
    make = compiled.Value if where == "default" else arena.value
    cases = [(3, 4), (0, -1), (-2, 0), (7, -7), (2 ** 26, -2 ** 26)]  # exact in a double (README)
    for a, b in cases:
        for op in (lambda x, y: x * y, lambda x, y: x + y):
            got, want = op(make(a), make(b)), op(pure.Value(a), pure.Value(b))
            assert type(got.data) is type(want.data) and got.data == want.data
            assert str(got.data) == str(want.data)  # no -0.0 where the pure engine has the int 0
            assert [type(g) for g in got._local_grads] == [type(g) for g in want._local_grads]
            assert got._local_grads == want._local_grads
    x = make(3)
    y = x * make(2.5)  # an int and a float: the fast path, a float
    assert type(y.data) is float and y.data == 7.5


@pytest.mark.parametrize("where", ["default", "explicit"])
def test_int_op_int_beyond_a_double_is_refused_and_appends_nothing(where):
    compiled = get_engine("compiled")
    arena = compiled.default_arena() if where == "default" else compiled.Arena()
    make = compiled.Value if where == "default" else arena.value
    x, y = make(BIG), make(BIG)
    n = len(arena)
    with pytest.raises(OverflowError):
        x * y
    assert len(arena) == n
    z = x * 0.5  # the arena works on
    assert z.data == BIG * 0.5 and len(arena) == n + 2


def test_another_arenas_freed_handles_serve_the_default_arena_and_keep_it_alone():
    """Handles of another arena, freed onto the free list (holding the default arena
    instead, at row 0), are then taken by default-arena operations, fast and
    generic, including one that raises before its handle is noted (an int beyond
    a double: the handle dies unattached); the other arena is freed meanwhile."""
    compiled = get_engine("compiled")
    default = compiled.default_arena()
    other = compiled.Arena()
    leaves = [other.value(float(k)) for k in range(5000)]  # rows beyond the default arena's first
    top = leaves[-1] * 2.0
    base = sys.getrefcount(other)
    del leaves, top
    gc.collect()
    assert sys.getrefcount(other) < base
    big = compiled.Value(BIG)
    for _ in range(50):
        with pytest.raises(OverflowError):
            big * big
    x = compiled.Value(1.5)
    got = [x * float(k) for k in range(100)] + [x + x for _ in range(100)]
    assert all(v.arena is default for v in got)
    assert [v.data for v in got[:100]] == [1.5 * k for k in range(100)]
    assert all((v * 1.0)._children[0] is v for v in got)  # each node's one handle
    del other
    gc.collect()
    assert (x * x).data == 2.25

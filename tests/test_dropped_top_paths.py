"""The default arena's drop of unnamed top nodes, from the odd places a handle dies.

A top node's handle can go while Python code runs inside an operation (a
number's __float__, a user-defined node's local gradients), in the collector's
pass over a cycle, while an exception is in flight, and at interpreter exit.
Each drop must leave every kept node's numbers and handle as they were, keep
the exception being raised, and never read a row it dropped.
"""
import gc
import subprocess
import sys

import pytest
from support import PACKAGE_PARENT, child_env

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

E = get_engine("compiled")
_engine = pytest.importorskip("microgpt._engine")
N = 150  # terms: 3 N + 1 nodes, a graph's worth for a drop


def big(x):
    return sum(x * float(k) for k in range(1, N + 1))


@pytest.fixture
def arena():
    gc.collect()  # no handle of an earlier test left to be freed in the middle of one
    x = E.Value(1.0)
    room = [big(x) for _ in range(20)]  # columns for 9,000 nodes: no reclaim in a test
    del room, x
    return _engine.default_arena()


class Dropping:
    """A number whose conversion drops the graph on top (held only by box)."""

    def __init__(self, box, value):
        self.box, self.value = box, value

    def __float__(self):
        self.box.clear()
        return self.value


def test_a_drop_inside_an_operations_conversion_leaves_its_operand(arena):
    x = E.Value(1.5)
    box = [big(x)]
    n = len(arena)
    y = x * Dropping(box, 2.0)  # the graph goes while the product is being made
    assert len(arena) == n - (3 * N + 1) + 2 and y.data == 3.0
    assert y._children[0] is x and y._children[1].data == 2.0
    y.backward()
    assert x.grad == 2.0


def test_a_drop_inside_a_user_defined_nodes_local_grads(arena):
    x = E.Value(3.0)
    box = [big(x)]
    z = E.Value(7.0, (x, x), (Dropping(box, 0.5), Dropping(box, 0.25)))
    assert not box and z._children == (x, x) and z._local_grads == (0.5, 0.25)
    z.backward()
    assert x.grad == 0.75


def test_a_drop_in_the_collectors_pass_over_a_cycle(arena):
    x = E.Value(2.0)
    kept = x * 3.0
    n = len(arena)
    cycle = [big(x)]
    cycle.append(cycle)
    del cycle
    gc.collect()  # the list's clear frees the top node's handle: the graph goes
    assert len(arena) == n and kept.data == 6.0 and kept._children[0] is x
    assert (x * 4.0).node == n + 1


def test_a_drop_while_an_exception_is_in_flight_keeps_it(arena):
    x = E.Value(2.0)
    n = len(arena)

    def fails():
        top = big(x)  # noqa: F841 - its handle goes as the frame unwinds
        raise KeyError("kept")

    with pytest.raises(KeyError, match="kept"):
        try:
            fails()
        except KeyError:
            assert len(arena) == n + 3 * N + 1  # the traceback's frame holds fails' graph
            top = big(x)
            del top  # a drop inside the handler, down to that graph's top
            assert len(arena) == n + 3 * N + 1 and sys.exc_info()[0] is KeyError
            raise
    assert len(arena) == n  # the traceback gone: fails' graph dropped


SHUTDOWN = """
import gc
from microgpt._engine import Value, default_arena
x = Value(2.0)
top = sum(x * float(k) for k in range(1, 200))
cycle = [top, sum(x * float(k) for k in range(1, 200))]
cycle.append(cycle)
kept = x * 3.0
class Late:
    def __del__(self):
        global top
        top = None  # a drop while the interpreter goes down
late = Late()
print(kept.data, len(default_arena()) > 0)
"""


def test_handles_freed_at_interpreter_exit():
    out = subprocess.run([sys.executable, "-c", SHUTDOWN], capture_output=True, text=True, timeout=60,
                         env=child_env(), cwd=PACKAGE_PARENT)  # the installed package, not the checkout
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6.0", "True"] and out.stderr == ""


@pytest.mark.parametrize("run", [255, 256, 257, 263, 264, 265, 520])
@pytest.mark.parametrize("kept_at", [None, 0, 1, 7, 8, 9, 200])
def test_a_drop_takes_exactly_the_unnamed_run_on_top(arena, run, kept_at):
    """run unnamed rows on top of a kept leaf (one of them kept instead, at
    kept_at from the bottom): dropped, down to the highest named row, only where
    the unnamed rows above it are a graph's worth (256)."""
    base = E.Value(0.5)
    n = len(arena)
    t, kept = base, None
    for j in range(run):
        t = t.relu()  # one node each; the one before loses its handle
        if j == kept_at:
            kept = t
    assert len(arena) == n + run
    del t
    unnamed = run - 1 - kept_at if kept_at is not None else run
    assert len(arena) == (n + run - unnamed if unnamed >= 256 else n + run)
    if kept is not None:
        assert kept.node == n + kept_at and kept.data == 0.5


def test_a_drop_when_the_free_list_of_handles_is_full(arena):
    """The top node's handle freed after the handle free list filled up (its slow
    path, which gives the object back to the allocator) drops the same rows."""
    x = E.Value(1.5)
    n = len(arena)
    leaves = [E.Value(float(k)) for k in range(9000)]  # more handles than the free list keeps
    top = [big(x)]
    assert len(arena) == n + 9000 + 3 * N + 1
    del leaves  # their rows are unnamed now, below the graph: nothing dropped yet
    assert len(arena) == n + 9000 + 3 * N + 1
    del top
    assert len(arena) == n and x.data == 1.5 and (x * 2.0).node == n + 1

"""The walks' marks are a byte a node: after 255 walks the column is cleared.

Backward's depth-first order and a reclaim each take a fresh stamp; when the
byte wraps, every old stamp is cleared first, so no node looks reached by a walk
that never reached it. Hundreds of walks must give what one gives each time.
"""
import pytest

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

E = get_engine("compiled")


def test_backward_and_reclaim_past_the_stamps_wrap():
    arena = E.Arena()
    x = arena.value(1.5)
    kept = x * 4.0  # a graph every reclaim's walk must keep
    first, walks = None, 0
    for k in range(700):  # 700 backward walks and 140 reclaims: the byte wraps three times
        x.grad = kept.grad = 0
        y = x * x + x * 2.0
        z = (y * y + kept).log()
        z.backward()
        walks += 1
        if first is None:
            first = (x.grad, y.grad, kept.grad)
        assert (x.grad, y.grad, kept.grad) == first and z.grad == 1
        del y, z
        if k % 5 == 0:
            n = len(arena)
            assert arena.reclaim() == n - 3 and len(arena) == 3  # x, 4.0 and kept stay
            walks += 1
            assert kept.data == 6.0 and kept._children[0] is x
    assert walks > 3 * 255


@pytest.mark.parametrize("gap", range(250, 260))
def test_a_graph_left_alone_while_the_stamps_wrap(gap):
    """A graph walked once, then left while gap other walks run: some gap brings
    the stamp back to the one its nodes carry, which must not read as reached."""
    arena = E.Arena()
    x, other = arena.value(1.5), arena.value(0.5)
    z = ((x * x + x * 2.0) * 3.0).log()
    z.backward()
    first = x.grad
    w = (other * other).exp()
    for _ in range(gap):
        w.backward()
    todo = [z]
    while todo:  # every grad of z's graph back to 0
        v = todo.pop()
        v.grad = 0
        todo.extend(v._children)
    z.backward()
    assert x.grad == first

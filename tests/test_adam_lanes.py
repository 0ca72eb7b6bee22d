"""Every build of the compiled Adam (src/adam.c, src/adam_wide.c) against the
pure engine's, the reference's arithmetic, bit for bit: the AVX-512 one (eight
consecutive parameters at a time, no divider), the AVX2 and the plain one
(_engine._adam_lanes caps the lanes in this process; MICROGPT_SIMD narrows them
as it does the tape's kernels). Gradients from every scale, zeros of both signs,
ones whose square or root pow must decide, and ones where Python raises."""
import math
import random

import pytest
from hypothesis import given, settings, strategies as st
from support import bits, python_child

from microgpt import available_engines, get_engine

if "compiled" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

from microgpt import _engine  # noqa: E402

PURE, COMPILED = get_engine("pure"), get_engine("compiled")
LANES = {"plain": 0, "avx2": 1, "avx512": 2}


@pytest.fixture(autouse=True)
def widest_lanes_after():
    yield
    _engine._adam_lanes(LANES["avx512"])  # the cap back where it was: the processor's decides


def snapshot(params, opt):
    m, v = opt.get_state()
    return ([bits(p.data) for p in params], [(type(p.grad), bits(p.grad)) for p in params],
            [bits(x) for x in m], [bits(x) for x in v])


def adam_over(engine, data, order, betas, eps, state, lanes):
    """Values of data, the parameters (in `order`, default as made), their Adam
    (from a checkpoint's `state`), the compiled one capped at build `lanes`."""
    if lanes is not None:
        _engine._adam_lanes(LANES[lanes])
    made = [engine.Value(x) for x in data]
    params = [made[i] for i in order] if order is not None else made
    opt = engine.Adam(params, beta1=betas[0], beta2=betas[1], eps=eps)
    if state:
        opt.set_state(*state)
    return made, params, opt


def run(engine, data, steps, eps=1e-8, order=None, state=None, lanes=None, betas=(0.85, 0.99)):
    """Adam over Values of data (in `order`, default as made), one step per list of
    gradients in steps: the parameters, grads and moments after each, and the
    error that stopped it (its type), as bits."""
    made, params, opt = adam_over(engine, data, order, betas, eps, state, lanes)
    out = []
    for step, grads in enumerate(steps):
        for p, g in zip(params, grads):
            p.grad = g
        try:
            opt.step(0.01 * (1 - step / (len(steps) + 1)), step)
        except (OverflowError, ZeroDivisionError) as e:
            out.append((type(e).__name__, snapshot(params, opt)))
            break
        out.append(snapshot(params, opt))
    return out


def every_build(data, steps, runner=None, **kw):
    """Runs (`runner`, else run) on the pure engine and on each build of the
    compiled one; asserts all agree."""
    runner = runner or run
    want = runner(PURE, data, steps, **kw)
    for lanes in LANES:
        assert runner(COMPILED, data, steps, lanes=lanes, **kw) == want, lanes
    return want


def grads(rng, n, zero_share=0.2):
    """n gradients from 1e-12 to 10: a share of them exactly zero, of either sign."""
    return [rng.choice([0.0, -0.0]) if rng.random() < zero_share else
            rng.gauss(0, 1) * 10.0 ** rng.randint(-12, 1) for _ in range(n)]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 127, 128, 129, 300])
def test_every_build_gives_the_pure_engines_numbers(n):
    # n around the eight lanes and the blocks of 128: the rest goes one by one
    rng = random.Random(n)
    data = [rng.gauss(0, 0.08) for _ in range(n)]
    every_build(data, [grads(rng, n) for _ in range(4)])


def test_parameters_out_of_node_order_take_the_blocks_of_gathers():
    rng = random.Random(5)
    data = [rng.gauss(0, 0.08) for _ in range(200)]
    order = list(range(200))
    rng.shuffle(order)
    every_build(data, [grads(rng, 200) for _ in range(3)], order=order)


def test_a_zero_second_moment_takes_pows_plus_zero():
    # a gradient always 0 leaves v at +0 or, from a checkpoint, -0: v_hat ** 0.5 is
    # +0 either way (sqrt(-0) is -0), and the update 0 / (0 + eps) keeps -0.0 data -0.0
    n = 40
    data = [-0.0, 0.0] * (n // 2)
    state = ([0.0] * n, [(-0.0 if i % 3 else 0.0) for i in range(n)])
    got = every_build(data, [[0.0] * n, [-0.0] * n], state=state)
    assert got[-1][0][0] == bits(-0.0) and got[-1][0][1] == bits(0.0)


def not_the_rounded_ones(power, rounded, count=40):
    """Numbers x where glibc's pow(x, power) is not the correctly rounded result."""
    rng = random.Random(power)
    found = []
    for _ in range(10 ** 6):
        x = rng.uniform(0.5, 2.0) * 2.0 ** rng.randint(-40, 10)
        if x ** power != rounded(x):
            found.append(x)
            if len(found) == count:
                return found
    pytest.skip("this libm's pow rounds these correctly: nothing for the test to tell apart")


def test_where_pow_squares_otherwise_every_build_takes_pows_square():
    # the second moment from v = 0 is (1 - beta2) * g ** 2: pow's square, not g * g
    g = not_the_rounded_ones(2, lambda x: x * x)
    got = every_build([0.5] * len(g), [g])
    assert got[0][3] == [bits(0.99 * 0.0 + (1 - 0.99) * x ** 2) for x in g]
    assert got[0][3] != [bits(0.99 * 0.0 + (1 - 0.99) * (x * x)) for x in g]


def test_where_pow_roots_otherwise_every_build_takes_pows_root():
    # beta2 0.5 at the first step: v_hat is v itself (0.5 v / 0.5), set from a
    # checkpoint; the update lr * 1 / (v_hat ** 0.5 + eps) tells pow's root from sqrt's
    x = not_the_rounded_ones(0.5, math.sqrt)
    n = len(x)
    got = every_build([0.0] * n, [[0.0] * n], state=([1.0] * n, x), betas=(0.5, 0.5))
    assert got[0][0] == [bits(0.0 - 0.01 * 1.0 / (r ** 0.5 + 1e-8)) for r in x]
    assert got[0][0] != [bits(0.0 - 0.01 * 1.0 / (math.sqrt(r) + 1e-8)) for r in x]


@pytest.mark.parametrize("at", [0, 5, 8, 131])
def test_where_g_squared_overflows_every_build_stops_where_python_does(at):
    rng = random.Random(at)
    g = grads(rng, 140)
    g[at] = 1e200
    got = every_build([0.1] * 140, [grads(rng, 140), g])
    assert got[-1][0] == "OverflowError"


@pytest.mark.parametrize("at", [0, 9, 130])
def test_a_zero_denominator_stops_every_build_where_python_does(at):
    # eps 0: a parameter whose gradient is 0 divides by v_hat ** 0.5 + 0 == 0
    rng = random.Random(at)
    g = [rng.gauss(0, 1) for _ in range(140)]
    g[at] = 0.0
    got = every_build([0.1] * 140, [g], eps=0.0)
    assert got[-1][0] == "ZeroDivisionError"


scales = st.integers(min_value=-320, max_value=300)
gradients = st.one_of(
    st.builds(lambda m, e: m * 10.0 ** e, st.floats(-10, 10, allow_nan=False), scales),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.0 ** -1022, 1e154, -1e154, 1e-160,
                     math.inf, -math.inf, math.nan]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(gradients, min_size=24, max_size=24), min_size=1, max_size=3),
       st.sampled_from([1e-8, 0.0, 1e-300, 1.0]))
def test_any_gradients_any_eps_every_build_agrees(steps, eps):
    # 24 parameters: three sets of eight lanes; every scale, where pow and the
    # dividers' fallbacks must step in, infinities and nans
    data = [0.1 * (i - 12) for i in range(24)]
    every_build(data, steps, eps=eps)


@pytest.mark.parametrize("simd, widest", [("avx2", 1), ("plain", 0)])
def test_microgpt_simd_narrows_adam_too(simd, widest):
    assert python_child("from microgpt import _engine; print(_engine._adam_lanes())", simd) <= widest

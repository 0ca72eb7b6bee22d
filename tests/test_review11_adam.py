"""Adversarial checks of the compiled Adam (src/adam.c, src/adam_wide.c, src/adam.h)
against the pure engine's, bit for bit, in every build (AVX-512, AVX2, plain):
squares and roots at the edges of binades (the spacing below 2**k is half the one
above), exact ties of g * g, second moments and gradients of every scale from a
checkpoint, bias corrections near 0 and 1, tiny and huge learning rates,
parameters out of node order across the blocks of eight and 128, and tied ones."""
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from support import bits
from test_adam_lanes import COMPILED, PURE, adam_over, every_build, widest_lanes_after  # noqa: F401 (an autouse fixture)


def go(engine, data, steps, betas=(0.85, 0.99), eps=1e-8, state=None, order=None, lr=0.01, t0=0, lanes=None):
    """Adam from step t0 over Values of data (taken in `order`), a list of grads a
    step: parameters, grads and moments after each step as bits, and the error's name."""
    made, params, opt = adam_over(engine, data, order, betas, eps, state, lanes)
    out = []
    for k, grads in enumerate(steps):
        for p, g in zip(params, grads):
            p.grad = g
        error = None
        try:
            opt.step(lr, t0 + k)
        except (OverflowError, ZeroDivisionError) as e:
            error = out.append(type(e).__name__) or e
        m, v = opt.get_state()
        out.append(([(type(p.data), bits(p.data)) for p in made], [(type(p.grad), bits(p.grad)) for p in made],
                    [bits(x) for x in m], [bits(x) for x in v]))
        if error is not None:
            break
    return out


def agree(data, steps, **kw):
    return every_build(data, steps, runner=go, **kw)


def _steps(x, k):
    """x and its k neighbours on either side (x positive)."""
    out, lo, hi = [x], x, x
    for _ in range(k):
        lo, hi = math.nextafter(lo, 0.0), math.nextafter(hi, math.inf)
        out += [lo, hi]
    return out


def edge_squares():
    # g whose g * g lies at or next to a power of two, in binades from tiny to huge
    gs = []
    for e in (-500, -450, -60, -31, -1, 0, 1, 7, 30, 61, 400, 500):
        gs += _steps(math.sqrt(2.0 ** e), 3)
    return gs


def tie_squares():
    # odd 27-bit integers whose squares have 54 bits: g * g is an exact tie
    # between two doubles, which pow need not break as round-to-even does
    ties = [g for g in range(94906267, 94906267 + 400, 2)][:40]
    return [g * 2.0 ** e for g, e in zip(ties, [-300, -40, -20, 0, 5, 50, 200, 300] * 5)]


@pytest.mark.parametrize("gs", [edge_squares(), tie_squares()], ids=["binade_edges", "ties"])
@pytest.mark.parametrize("v0", [0.0, -0.0, 1e-300, 1.0, 3.7e12])
def test_squares_at_binade_edges_and_exact_ties(gs, v0):
    n = len(gs)
    agree([0.25] * n, [gs, [-g for g in gs]], state=([0.0] * n, [v0] * n))


def edge_roots():
    xs = []
    for e in (-880, -600, -122, -61, -60, -59, -2, -1, 0, 1, 2, 59, 60, 61, 120, 900, 1000):
        xs += _steps(2.0 ** e, 3)
    xs += _steps(2.0 ** 1000 * 1.9999999999, 2) + _steps(2.0 ** -900, 2)
    return xs


@pytest.mark.parametrize("eps", [1e-8, 0.0, 1e-300, 5e-324])
@pytest.mark.parametrize("d", [0.0, 0.3, -1e-17, 1e20])
def test_roots_at_binade_edges(eps, d):
    # betas (0.5, 0.5) at the first step with g 0: v_hat is the checkpoint's v
    xs = edge_roots()
    n = len(xs)
    agree([d] * n, [[0.0] * n], betas=(0.5, 0.5), eps=eps, state=([1.0] * n, xs))
    agree([d] * n, [[0.0] * n], betas=(0.5, 0.5), eps=eps, state=([x * 1e-3 for x in xs], xs))


@pytest.mark.parametrize("betas, t0", [((0.9999999, 0.9999999999), 0), ((0.9999999, 0.9999999999), 10 ** 7),
                                       ((0.0, 0.0), 0), ((1e-300, 0.5), 3), ((0.5, 1e-17), 0),
                                       ((0.85, 0.99), 10 ** 6), ((0.85, 0.99), 1), ((0.85, 1 - 2 ** -53), 0),
                                       ((1 - 2 ** -53, 1e-300), 7)])  # (betas outside [0, 1): test_adam_inputs.py)
def test_bias_corrections_near_zero_and_one(betas, t0):
    rng = random.Random(t0)
    n = 140
    steps = [[rng.gauss(0, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(n)] for _ in range(3)]
    agree([rng.gauss(0, 0.1) for _ in range(n)], steps, betas=betas, t0=t0)


@pytest.mark.parametrize("lr", [0.0, -0.0, 5e-324, 1e-300, 1e300, 1.7e308, -3.0, math.inf])
def test_tiny_and_huge_learning_rates(lr):
    rng = random.Random(7)
    n = 136
    steps = [[rng.gauss(0, 1) * 10.0 ** rng.randint(-8, 3) for _ in range(n)] for _ in range(2)]
    agree([rng.gauss(0, 0.1) for _ in range(n)], steps, lr=lr)


@pytest.mark.parametrize("n", [8, 15, 16, 17, 127, 128, 129, 257])
@pytest.mark.parametrize("how", ["reversed", "strided", "tied"])
def test_gathered_parameters_across_block_edges(n, how):
    rng = random.Random(n)
    data = [rng.gauss(0, 0.1) for _ in range(n)]
    if how == "reversed":
        order = list(range(n))[::-1]
    elif how == "strided":
        order = list(range(0, n, 3)) + list(range(1, n, 3)) + list(range(2, n, 3))
    else:  # a parameter listed twice: its second update sees the first's zeroed grad
        order = list(range(n)) + [n // 2, 0, n - 1]
    steps = [[rng.choice([rng.gauss(0, 1), 0.0, -0.0, 1e-160, 3e150]) for _ in order] for _ in range(3)]
    agree(data, steps, order=order)


def test_an_overflowing_square_in_a_gathered_block_stops_where_python_does():
    n = 200
    order = list(range(n))[::-1]
    g = [0.5] * n
    g[137] = 1e160  # the 138th in order: its own block of 128 and the one before are written
    got = agree([0.1] * n, [[0.01] * n, g], order=order)
    assert got[-2] == "OverflowError"


odd = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.0 ** -1022, 2.0 ** -1074 * 3, 1e-160, 1.5e-154,
                       1.34e154, 2.0 ** 512, math.sqrt(2.0) * 2.0 ** 511, 1e308, math.inf, -math.inf])
scaled = st.builds(lambda m, e: m * 2.0 ** e, st.floats(0.5, 2.0), st.integers(-1074, 1023))
anyg = st.one_of(odd, scaled, st.builds(lambda x: -x, scaled))
moments = st.one_of(st.sampled_from([0.0, -0.0, 5e-324, 2.0 ** -1022, 1e300, math.inf]), scaled)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(anyg, anyg, moments, st.one_of(scaled, st.builds(lambda x: -x, scaled))),
                min_size=9, max_size=20),
       st.sampled_from([(0.85, 0.99), (0.5, 0.5), (0.9, 0.999), (0.0, 0.0)]),
       st.sampled_from([1e-8, 0.0, 5e-324]), st.integers(0, 3), st.booleans())
def test_any_checkpoint_any_gradients_every_build_agrees(rows, betas, eps, t0, gathered):
    # m and v from a checkpoint (v >= 0, as the reference's v always is), every scale;
    # the parameters as consecutive nodes or gathered (reversed). No nan gradient:
    # where two nans of opposite signs meet in one sum, which sign comes out is the
    # compiler's choice of operand order, in CPython as here
    g1, g2, v, m = (list(c) for c in zip(*rows))
    n = len(rows)
    order = list(range(n))[::-1] if gathered else None
    agree([0.5 - i / n for i in range(n)], [g1, g2], betas=betas, eps=eps, state=(m, v), t0=t0, order=order)


@pytest.mark.parametrize("n", [8, 24, 130])
def test_int_data_and_small_int_grads_come_out_as_the_pure_engines_types(n):
    # ints below 2**26 square exactly; after a step data are floats and grads the int 0
    rng = random.Random(n)
    steps = [[rng.choice([0, 1, -3, 2 ** 25 + 1, -(2 ** 26) + 5, 0.5]) for _ in range(n)] for _ in range(2)]
    got = agree([rng.choice([0, 1, -2, 0.5]) for _ in range(n)], steps)
    assert {t for t, _ in got[-1][0]} == {float} and {t for t, _ in got[-1][1]} == {int}


@pytest.mark.parametrize("n", [1, 8, 9, 130])
def test_large_int_grads_are_squared_as_ints_in_every_build(n):
    # 94906297 ** 2 lies exactly between two doubles: Python squares the int and
    # rounds once (to even); glibc's pow(94906297.0, 2.0) rounds the other way.
    # Ints up to 2**53, their squares' neighbours and ties, mixed with floats,
    # in blocks of eight and 128 and one at a time.
    rng = random.Random(n)
    big = [94906297, 94906299, 391536674166912, 2 ** 53 - 1, 2 ** 27 + 1, -94906297]
    steps = [[rng.choice(big + [0.25, 0]) for _ in range(n)] for _ in range(2)]
    agree([0.5] * n, steps)
    agree([0.5] * n, steps, order=list(range(n))[::-1])


def test_a_backward_through_an_int_constant_leaves_an_int_grad_adam_squares_as_python_does():
    def run(engine):
        p = engine.Value(0.5)
        (p * 94906297).backward()
        opt = engine.Adam([p], beta1=0.85, beta2=0.99)
        opt.step(0.01, 0)
        return bits(p.data), [bits(x) for x in opt.get_state()[1]]
    assert run(COMPILED) == run(PURE)

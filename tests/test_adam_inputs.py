"""Adam's inputs outside the reference's range are refused by every engine, before
any number changes (microgpt/adam_inputs.py): betas outside [0, 1), a negative
step or one whose step + 1 is no float, negative second moments in set_state."""
import math

import pytest

from microgpt import get_engine

ENGINES = [get_engine("pure"), get_engine("compiled")]


def made(engine, n=3):
    params = [engine.Value(0.5 + i) for i in range(n)]
    for p in params:
        p.grad = 0.25
    return params


def untouched(params, opt, n=3):
    assert [p.data for p in params] == [0.5 + i for i in range(n)]
    assert [p.grad for p in params] == [0.25] * n
    assert opt.get_state() == ([0.0] * n, [0.0] * n)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
@pytest.mark.parametrize("betas", [(1.0, 0.99), (0.85, 1.0), (1.5, 0.99), (0.85, 1e200), (-0.1, 0.99),
                                   (0.85, -1e-300), (math.nan, 0.99), (0.85, math.inf), (-0.5, 0.99),
                                   (1.5, 1.2), (1 + 2 ** -52, 1 + 2 ** -40)])
def test_betas_outside_zero_one_are_refused(engine, betas):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        engine.Adam(made(engine), beta1=betas[0], beta2=betas[1])


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
@pytest.mark.parametrize("betas", [(0.0, 0.0), (0.85, 0.99), (1 - 2 ** -53, 1 - 2 ** -53)])
def test_betas_at_the_edges_of_the_range_step(engine, betas):
    params = made(engine)
    opt = engine.Adam(params, beta1=betas[0], beta2=betas[1])
    opt.step(0.01, 0)
    assert all(p.grad == 0 for p in params) and all(math.isfinite(p.data) for p in params)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
@pytest.mark.parametrize("step, error", [(-1, ValueError), (-5, ValueError), (10 ** 400, OverflowError)])
def test_a_step_adam_cannot_take_changes_nothing(engine, step, error):
    # step -1 would divide by 1 - beta ** 0 = 0, step 10**400 overflow converting
    # step + 1: the reference raises only after the first parameter's moments moved
    params = made(engine)
    opt = engine.Adam(params)
    with pytest.raises(error):
        opt.step(0.01, step)
    untouched(params, opt)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_negative_second_moments_are_refused_and_the_state_kept(engine):
    params = made(engine)
    opt = engine.Adam(params)
    with pytest.raises(ValueError, match="entry 1 is -1e-300"):
        opt.set_state([0.1, 0.2, 0.3], [0.0, -1e-300, 0.5])
    untouched(params, opt)
    opt.set_state([0.1, 0.2, 0.3], [-0.0, math.inf, 0.5])  # a zero of either sign, inf: squares' averages
    assert opt.get_state()[1][1] == math.inf


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_the_engines_agree_after_refusals(engine):
    # a refused step leaves the optimizer usable: the next step is the pure engine's
    results = []
    for eng in ENGINES:
        params = made(eng)
        opt = eng.Adam(params)
        with pytest.raises(ValueError):
            opt.step(0.01, -1)
        opt.step(0.01, 0)
        results.append([p.data for p in params])
    assert results[0] == results[1]


def test_the_torch_engines_adam_refuses_the_same():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install '.[torch]')")
    from microgpt.torch_engine import Adam
    params = [torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Adam(params, 1.0, 0.99, 1e-8)
    opt = Adam(params, 0.85, 0.99, 1e-8)
    with pytest.raises(ValueError, match="counts from 0"):
        opt.step(0.01, -1)
    with pytest.raises(ValueError, match="never negative"):
        opt.set_state([0.0] * 3, [0.0, 0.0, -2.0])
    assert opt.get_state() == ([0.0] * 3, [0.0] * 3)

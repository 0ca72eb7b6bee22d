"""The replay's grad column (test_review_steps.py) under operations in any
order on small models: backwards adding up, Adam, .grad set before a step or
between a forward and its backward (zeros of either sign and type, a denormal,
an int, huge, inf, nan), a user's own graph, a weight not finite for one step,
longer documents recorded again; every .grad as (type, bits) and every loss
and weight as the compiled engine's. Fixed draws on the AVX2 and plain builds."""
import functools
import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from microgpt import available_engines
from test_review_steps import adam_step, backward, column, hexed, on_narrower_build, user_graph, weights
from test_tape import trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

OP_NAMES = ["backward", "backward", "adam", "adam", "zero", "starts", "mid", "user", "bad_weight", "longer"]


def starts(t, rng):
    """Some parameters' .grad set to numbers a step may meet: zeros of either
    sign and type, a denormal, an int, huge, inf or nan."""
    for p in rng.sample(t.params, min(len(t.params), 6)):
        p.grad = rng.choice([0, 0.0, -0.0, -0.0, 5e-324, -2.5, 3, 1.7e308, math.inf, math.nan])


def fuzz_trace(engine, cfg, letters, ops, seed):
    t = trainer(engine, docs=[letters], **cfg)
    rng, out, step = random.Random(seed), [], 0
    longest = 1
    for op in ops:
        n = rng.randint(1, longest)
        doc = "".join(rng.choice(letters) for _ in range(n - 1))
        if op == "longer":  # a document longer than any before: recorded again where the block allows
            longest = min(cfg["block_size"] + 1, 2 * longest + 1)
            doc = "".join(rng.choice(letters) for _ in range(longest))
            out.append(backward(t, doc))
        elif op == "backward":
            out.append(backward(t, doc))
        elif op == "adam":  # (a .grad too large or not finite dropped first: Adam's square would overflow)
            for p in t.params:
                if not abs(p.grad) < 1e150:
                    p.grad = 0
            out.append(adam_step(t, doc, step))
            step += 1
            out.append(weights(t))
        elif op == "zero":
            for p in t.params:
                p.grad = 0
        elif op == "starts":
            starts(t, rng)
        elif op == "mid":  # .grad set between a document's forward and its backward
            with t.engine.graph():
                loss = t.forward(t.tokenizer.document_tokens(doc))
                starts(t, rng)
                t.backward(loss)
                out.append(hexed(loss.data))
        elif op == "user":
            user_graph(t)
        else:  # a weight not finite for one backward, put back after
            mat = t.sd[rng.choice(list(t.sd))]
            p = mat[rng.randrange(len(mat))][rng.choice([0, -1, len(mat[0]) // 2])]
            kept, p.data = p.data, rng.choice([math.nan, math.inf])
            out.append(backward(t, doc))
            p.data = kept
        out.append(column(t))
    return out, t


def outcome(engine, case):
    """fuzz_trace's trace, or the name of the error it raised (the reference's own: the replay's too)."""
    try:
        return fuzz_trace(engine, *case)[0]
    except (ValueError, OverflowError, ZeroDivisionError) as e:
        return type(e).__name__


@st.composite
def fuzz_cases(draw):
    head, n_head = draw(st.sampled_from([1, 3, 4, 8, 9, 16, 17, 24])), draw(st.sampled_from([1, 2, 3, 8]))
    n_head = n_head if head * n_head <= 72 else 1
    cfg = dict(n_layer=draw(st.integers(1, 4)), n_embd=head * n_head, n_head=n_head,
               block_size=draw(st.sampled_from([1, 2, 3, 9, 17, 20, 33])))
    letters = draw(st.sampled_from(["a", "ab", "abc", "abcdefghijklmnopq"]))
    return cfg, letters, draw(st.lists(st.sampled_from(OP_NAMES), min_size=3, max_size=14)), draw(st.integers(0, 99))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(fuzz_cases())
def test_fuzzed_operations_end_the_column_as_the_compiled_engine(case):
    assert outcome("replay", case) == outcome("compiled", case)


# the same in child processes of the AVX2 and plain builds (fixed draws)
FUZZ_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from microgpt import _engine
from test_review_step_orders import FIXED_CASES, outcome
print(json.dumps([_engine.simd_lanes(), [outcome("replay", c) for c in FIXED_CASES]]))
"""
def fixed_cases(count=8, seed=5):
    rng, out = random.Random(seed), []
    for _ in range(count):
        head, n_head = rng.choice([3, 8, 9, 16, 17, 24]), rng.choice([1, 2, 3])
        cfg = dict(n_layer=rng.randint(1, 3), n_embd=head * n_head, n_head=n_head, block_size=rng.choice([2, 9, 17, 20]))
        out.append((cfg, rng.choice(["ab", "abc", "abcdefghijklmnopq"]),
                    [rng.choice(OP_NAMES) for _ in range(rng.randint(4, 12))], rng.randint(0, 99)))
    return out


FIXED_CASES = fixed_cases()


@functools.lru_cache(maxsize=1)
def compiled_outcomes():
    return json.loads(json.dumps([outcome("compiled", c) for c in FIXED_CASES]))


@pytest.mark.parametrize("simd", ["avx2", "plain"])
def test_fuzzed_operations_on_narrower_builds(simd):
    assert on_narrower_build(FUZZ_CHILD, simd) == compiled_outcomes()


"""The replay's backward steps (steps.c) and its row blocks summed in the
arena's grad column (weight_grads.c, params.c) held to the compiled engine bit
for bit, with every parameter's .grad compared as (type, bits): an int 0 the
model code leaves apart from a float, -0.0 apart from 0.0.

One script of operations runs on a replay trainer and a compiled one made
alike: a short document first (a short recording), then a longer one that
records again, gradients added over two documents and over a user's own graph
before a step, a .grad of -0.0, 0.0, a denormal or inf where a step starts,
weights that are not finite in a matrix's first or last 16 columns (the step
handed back to the model code after the blocks summed in the column), then
steps of Adam over every document length up to the recording's. Odd widths,
one to eight heads, one to six layers, blocks of 1, 2, 17 and 33, vocabularies
of one to three letters; the AVX2 and plain builds in child processes. The
same operations in any order: test_review_step_orders.py."""
import functools
import json
import math
import random
import struct
from pathlib import Path

import pytest

from microgpt import available_engines
from microgpt.sampling import make_sampler, sample
from support import python_child
from test_tape import trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")


def hexed(x):
    # every bit of a float (a NaN's sign and payload are no part of the contract)
    return "nan" if x != x else struct.pack("<d", x).hex()


def column(t):
    """Every parameter's .grad as (type, bits)."""
    return [(type(p.grad).__name__, hexed(p.grad)) for p in t.params]


def weights(t):
    return [hexed(p.data) for p in t.params]


def backward(t, doc):
    """One document's loss and backward, adding to what .grad holds."""
    with t.engine.graph():
        loss = t.forward(t.tokenizer.document_tokens(doc))
        t.backward(loss)
        return hexed(loss.data)


def adam_step(t, doc, step):
    """train_step on a chosen document: forward, backward, Adam (zeroing .grad)."""
    with t.engine.graph():
        loss = t.forward(t.tokenizer.document_tokens(doc))
        t.backward(loss)
        value = loss.data
        t.update(t.lr_at(step), step)
    return hexed(value)


def user_graph(t):
    """A graph of the user's own over some parameters, its backward run: their
    .grad hold its gradients (floats) when the next document's backward starts."""
    ps = t.params
    with t.engine.graph():
        s = ps[0] * 0.5
        for k in range(3, len(ps), 7):
            s = s + ps[k] * ps[k - 1] - ps[k - 2] * -0.0
        s.backward()


def place(t, name, row, col):
    """Parameter sd[name][row][col], counting row and col from the end when negative."""
    mat = t.sd[name]
    return mat[row % len(mat)][col % len(mat[0])]


def script(t, cfg, letters):
    """The operations, each followed by what it left: losses, .grad, weights."""
    bs, out = cfg["block_size"], []
    rng = random.Random(11)
    doc = lambda n: "".join(rng.choice(letters) for _ in range(n))  # noqa: E731  (n + 1 positions with BOS)
    short, longest = doc(max(1, min(bs, 3) - 1)), doc(bs + 2)
    out.append(backward(t, short))                     # the first recording: a few positions
    out.append(column(t))
    out.append(backward(t, longest))                   # a longer one: recorded again, .grad not zero
    out.append(column(t))
    user_graph(t)
    out.append(backward(t, doc(bs)))
    out.append(column(t))
    last = f"layer{cfg['n_layer'] - 1}"
    for p in t.params:
        p.grad = 0
    place(t, "lm_head", 0, 0).grad = -0.0              # one block's start not +0.0 bits
    place(t, f"{last}.mlp_fc2", -1, -1).grad = 0.0     # a float zero: as +0.0
    place(t, "layer0.attn_wv", 1, -1).grad = 5e-324
    out.append(backward(t, doc(max(1, bs // 2))))
    out.append(column(t))
    for p in t.params:  # the other blocks sum in the column; then one not finite: the model code's step
        p.grad = 0
    place(t, "layer0.mlp_fc1", -1, -1).grad = math.inf
    out.append(backward(t, doc(bs)))
    out.append(column(t))
    for p in t.params:
        p.grad = 0
    step = 0
    for where in [("layer0.mlp_fc2", 2, 0), (f"{last}.attn_wo", -1, -1), ("lm_head", 1, -1), ("layer0.attn_wq", 0, 0)]:
        p = place(t, *where)
        kept, p.data = p.data, math.nan                 # the forward's numbers not finite: handed back
        out.append(backward(t, doc(bs)))
        out.append(column(t))
        p.data = kept
        for q in t.params:
            q.grad = 0
        out.append(adam_step(t, doc(bs), step))        # the column zeroed again: summed in place
        out.append(weights(t))
        step += 1
    for n in range(bs, 0, -1):                         # every length up to the recording's, Adam between
        out.append(adam_step(t, doc(n), step))
        step += 1
    out.append(column(t))
    out.append(weights(t))
    return out


# (n_layer, n_embd, n_head, block_size, letters)
CONFIGS = [(1, 8, 1, 1, "a"), (2, 8, 2, 2, "ab"), (1, 24, 8, 17, "abc"), (3, 40, 2, 17, "ab"),
           (6, 8, 1, 5, "abc"), (1, 72, 8, 33, "abc"), (1, 136, 8, 4, "ab"), (4, 24, 1, 33, "a")]


def run_script(engine, case):
    n_layer, n_embd, n_head, bs, letters = case
    cfg = dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=bs)
    t = trainer(engine, docs=[letters * bs], **cfg)
    return script(t, cfg, letters), t


def names(t, trained):
    """Six names drawn after training, on the training tape where trained."""
    sampler = make_sampler(t.engine, t.sd, t.config, 6, trained=t.document_loss if trained else None)
    random.seed(4)
    out = [sample(t.engine, t.sd, t.config, t.tokenizer, 0.6, sampler=sampler) for _ in range(6)]
    return out, sampler


@pytest.mark.parametrize("case", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_the_grad_column_ends_as_the_compiled_engines(case):
    (got, t), (want, tc) = run_script("replay", case), run_script("compiled", case)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"operation {k}"
    runner = t.document_loss
    bs = case[3]
    assert runner.recordings == (1 if bs <= 16 else 2)  # (16 positions recorded first)
    assert runner.model_steps == 5  # the inf start and the four non-finite forwards: nothing else
    assert runner.tape.counts(runner.tape.n_pos)["pulls_stepped"] > 0  # (lists summed without indices)
    # the sampler after training, on the training tape: the compiled engine's names
    (drawn, sampler), (drawn_c, _) = names(t, True), names(tc, False)
    assert drawn == drawn_c
    assert sampler.trained is not None and sampler.tapes == {} and sampler.model_positions == 0


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from microgpt import _engine
from test_review_steps import CONFIGS, run_script
print(json.dumps([_engine.simd_lanes(), [run_script("replay", c)[0] for c in CONFIGS[1:4]]]))
"""


@functools.lru_cache(maxsize=1)
def compiled_scripts():
    return json.loads(json.dumps([run_script("compiled", c)[0] for c in CONFIGS[1:4]]))


def on_narrower_build(code, simd):
    """What a child process of the build narrowed to simd prints (code: its lanes, then the results)."""
    lanes, got = python_child(code.format(tests=str(Path(__file__).parent)), simd)
    assert lanes in ((simd,) if simd == "plain" else ("avx2", "plain"))
    return got


@pytest.mark.parametrize("simd", ["avx2", "plain"])
def test_narrower_builds_end_the_column_alike(simd):
    assert on_narrower_build(CHILD, simd) == compiled_scripts()


# model code written otherwise (test_review_kernels): other lists, runs and
# chains for the steps to dispatch, other row blocks, the same script
@pytest.mark.parametrize("attr,fn", [("rmsnorm", "_rms_chain"), ("softmax", "_soft_chain"),
                                     ("linear", "_halves"), ("linear", "_plain")])
def test_model_code_written_otherwise_ends_the_column_alike(monkeypatch, attr, fn):
    import test_review_kernels
    from microgpt import model
    monkeypatch.setattr(model, attr, getattr(test_review_kernels, fn))
    case = (2, 24, 2, 17, "abc")
    (got, t), (want, _) = run_script("replay", case), run_script("compiled", case)
    assert got == want
    assert t.document_loss.model_steps == 5 and t.document_loss.recordings == 2

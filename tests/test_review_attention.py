"""The replay's softmax rows (src/tape/attention.c), a head's values' runs
(shifted.c) and lane runs four registers at a time (pull_lanes.c), held to the
compiled engine bit for bit where they are most likely to slip: every loss,
every parameter's gradient as the update reads it (so -0.0 against 0.0 and NaN
payloads count) and every weight after it; head dims 1 to 64 (odd ones, and
n_embd not a multiple of n_head), blocks of 1 key to more than 32, documents of
one token and longer than the block, weights that tie, underflow, are -0.0 or
denormal, softmaxes of other shapes (the rows must not be taken: the general
path, still exact), a step whose gradients are not finite, and every SIMD
build (MICROGPT_SIMD=avx2, plain, in child processes)."""
import json
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from microgpt import available_engines, get_engine, model
from microgpt.data import Tokenizer
from microgpt.model import Config, init_state_dict, parameters
from microgpt.sampling import make_sampler, sample
from microgpt.train import Trainer
from support import python_child

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")


def hexed(x):
    # every bit, -0.0 apart from 0.0; a NaN's sign and payload are no part of the
    # contract (support.same_float): C compilers may swap a sum's operands, and
    # which of two NaNs an addition returns depends on their order
    return "nan" if x != x else struct.pack("<d", x).hex()


def docs_of(seed, alphabet, lo, hi, n):
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def set_weights(sd, init, seed):
    """Weights where the row's sums are at their edges (ties, zeros, underflow)."""
    rng = random.Random(seed)
    for name, mat in sd.items():
        for row in mat:
            for j, p in enumerate(row):
                if init == "equal":  # every logit of a row equal: its weights tie
                    p.data = 0.05
                elif init == "tied_rows":  # every row of a matrix the same
                    p.data = mat[0][j].data
                elif init == "negzero_qk" and ("attn_wq" in name or "attn_wk" in name):
                    p.data = -0.0  # q . k is +-0.0 everywhere
                elif init == "denormal_v" and "attn_wv" in name:
                    p.data = rng.choice([5e-324, -5e-324, 1e-310, -0.0, 0.0])
                elif init == "huge_qk" and ("attn_wq" in name or "attn_wk" in name):
                    p.data = rng.gauss(0, 30.0)  # logits far apart: exps underflow to 0.0


def run(engine, docs, config, steps, seed=1, init="normal"):
    """(losses, each step's gradients, weights after, replay's counts or None)."""
    eng = get_engine(engine)
    random.seed(seed)
    tok = Tokenizer.from_documents(docs)
    cfg = Config(vocab_size=tok.vocab_size, **config)
    sd = init_state_dict(eng.Value, cfg)
    set_weights(sd, init, seed)
    t = Trainer(eng, sd, cfg, list(docs), tok, num_steps=100)
    grads, update = [], t.update

    def recorded_update(lr, step):
        grads.append([hexed(p.grad) for p in t.params])
        update(lr, step)
    t.update = recorded_update
    losses = []
    for _ in range(steps):
        try:
            losses.append(hexed(t.train_step()[1]))
        except (ValueError, OverflowError) as e:  # (the model code's own, e.g. log(0.0))
            losses.append(f"{type(e).__name__}: {e}")
            break
    tape = getattr(getattr(t, "document_loss", None), "tape", None)
    counts = tape.counts(tape.n_pos) if tape is not None else None
    return (losses, grads, [hexed(p.data) for p in parameters(sd)]), counts, t


def same_as_compiled(docs, config, steps, **kw):
    got, counts, t = run("replay", docs, config, steps, **kw)
    want, _, _ = run("compiled", docs, config, steps, **kw)
    assert got[0] == want[0], "losses"
    for step, (g, w) in enumerate(zip(got[1], want[1])):
        bad = [k for k, (a, b) in enumerate(zip(g, w)) if a != b]
        assert not bad, f"step {step}: {len(bad)} gradients differ, first parameter {bad[0]}"
    assert got == want
    return counts, t


# (n_layer, n_embd, n_head, block_size): head dims 1, 3, 4, 5, 7, 16, 3 of 10, 48, 64;
# blocks of 1, 2, 3, 5 and 17 keys, and 33 (a second chunk of 32 keys in wgrads)
SHAPES = [(1, 8, 8, 3), (1, 15, 5, 17), (1, 12, 3, 5), (2, 10, 2, 5), (1, 21, 3, 2), (2, 16, 1, 1),
          (3, 8, 2, 3), (1, 10, 3, 5), (1, 96, 2, 33), (1, 64, 1, 17)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L%d-E%d-H%d-B%d" % s)
def test_rows_at_the_kernels_edges_replay_the_compiled_numbers(shape):
    n_layer, n_embd, n_head, block = shape
    # one-token documents, ones shorter than the block and ones longer (cut), two symbols
    docs = ["a", "ab", "b" * (block + 3), "ba" * block, "abba"[:max(1, block - 1)]]
    counts, t = same_as_compiled(docs, dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block), 5)
    n_pos = t.document_loss.tape.n_pos
    assert counts["attention_rows"] == n_layer * n_head * n_pos  # every head's row, every position
    assert t.document_loss.model_steps == 0


@pytest.mark.parametrize("init", ["equal", "tied_rows", "negzero_qk", "denormal_v", "huge_qk"])
@pytest.mark.parametrize("shape", [(1, 16, 4, 9), (1, 64, 4, 33)], ids=lambda s: "L%d-E%d-H%d-B%d" % s)
def test_tied_zero_denormal_and_underflowing_weights_replay_exactly(init, shape):
    n_layer, n_embd, n_head, block = shape
    docs = docs_of(3, "abcde", 1, block + 4, 4)
    counts, _ = same_as_compiled(docs, dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block),
                                 3, init=init)
    assert counts["attention_rows"] > 0


def test_underflowing_exps_make_weights_of_exactly_zero():
    # (the case above is the one it claims to be: some attention weights are 0.0)
    eng = get_engine("compiled")
    random.seed(1)
    cfg = Config(vocab_size=6, n_layer=1, n_embd=16, n_head=4, block_size=9)
    sd = init_state_dict(eng.Value, cfg)
    set_weights(sd, "huge_qk", 1)
    seen = []
    read = model.reader(sd, cfg, watch=lambda stage, xs: seen.extend(x.data for x in xs) if "head" in stage else None)
    for pos, tok in enumerate([5, 1, 2, 3, 4, 1]):
        read(tok, pos)
    assert 0.0 in seen and 1.0 in seen


def test_a_step_of_non_finite_numbers_falls_back_exactly():
    # weights so large that the second step's numbers overflow: those steps run the model code
    docs = docs_of(5, "abcdef", 1, 12, 4)
    counts, t = same_as_compiled(docs, dict(n_layer=1, n_embd=16, n_head=4, block_size=12, init_std=1e155), 3)
    assert counts["attention_rows"] > 0 and t.document_loss.model_steps > 0


def test_shorter_replays_and_the_trained_sampler_exactly():
    # a long first document records every position; shorter ones replay fewer (each
    # head's values copied at its last position's row); then names at three temperatures
    config = dict(n_layer=2, n_embd=16, n_head=2, block_size=20)
    docs = ["abcdefghijabcdefghij"] + docs_of(8, "abcdefghij", 1, 19, 7)
    names = {}
    for engine in ("replay", "compiled"):
        (losses, grads, weights), _, t = run(engine, docs, config, len(docs) + 2)
        random.seed(11)
        trained = t.document_loss if engine == "replay" else None
        sampler = make_sampler(t.engine, t.sd, t.config, 6, trained=trained)
        names[engine] = (losses, grads, weights,
                         [sample(t.engine, t.sd, t.config, t.tokenizer, temperature=tp, sampler=sampler)
                          for tp in (0.3, 1.0, 2.5) for _ in range(2)])
    assert names["replay"] == names["compiled"]


# softmaxes of other shapes (in attention only; the logits' softmax stays): none of
# them is a row, each must run by the entries' own lists, bit for bit
def shared_pow(logits):
    m = model.max_data(logits)
    exps = [(v - m).exp() for v in logits]
    inv = sum(exps) ** -1
    return [e * inv for e in exps]


def reversed_total(logits):
    m = model.max_data(logits)
    exps = [(v - m).exp() for v in logits]
    total = sum(reversed(exps))
    return [e / total for e in exps]


def windowed(logits):  # the last three keys only: rows of fewer keys than positions
    return [v * 0.0 for v in logits[:-3]] + REFERENCE_SOFTMAX(logits[-3:])


def weight_read_twice(logits):
    w = REFERENCE_SOFTMAX(logits)
    w[0] = w[0] + 0.0 * w[-1]
    return w


def scaled_last(logits):  # one logit's scale not the others'
    return REFERENCE_SOFTMAX([v * 1.0 for v in logits[:-1]] + logits[-1:])


REFERENCE_SOFTMAX = model.softmax


@pytest.mark.parametrize("variant", [shared_pow, reversed_total, windowed, weight_read_twice, scaled_last])
def test_softmaxes_of_other_shapes_are_not_taken_as_rows(monkeypatch, variant):
    docs = docs_of(3, "abcdefghijklmnopqrstuvwxyz", 1, 25, 4)
    vocab = len(set("".join(docs))) + 1
    monkeypatch.setattr(model, "softmax", lambda logits: variant(logits) if len(logits) != vocab
                        else REFERENCE_SOFTMAX(logits))
    config = dict(n_layer=2, n_embd=32, n_head=2, block_size=vocab - 1)
    counts, t = same_as_compiled(docs, config, 3)
    assert counts["attention_rows"] == 0 and t.document_loss.model_steps == 0


def test_rows_whose_values_differ_from_the_last_rows_are_not_taken(monkeypatch):
    # query p reads v_t ** (p + 1) for keys t > 0 (one node each, laid out as the values
    # are) and v_0 itself: every row has the shape, but no one block of values serves
    # all of a head's rows (attention.c group_heads), so none is taken
    gpt, linear, at = model.gpt, model.linear, {"pos": 0, "call": 0}

    class Powered(list):
        def __getitem__(self, i):
            got = list.__getitem__(self, i)
            return [v ** (at["pos"] + 1) for v in got] if isinstance(i, slice) else got

    def query(sd, config, token_id, pos_id, *args, **kw):
        at["pos"], at["call"] = pos_id, 0
        return gpt(sd, config, token_id, pos_id, *args, **kw)

    def values_powered(x, w):
        at["call"] += 1
        return Powered(linear(x, w)) if at["call"] == 3 and at["pos"] > 0 else linear(x, w)  # q, k, v
    monkeypatch.setattr(model, "gpt", query)
    monkeypatch.setattr(model, "linear", values_powered)
    counts, _ = same_as_compiled(docs_of(4, "abcdef", 2, 12, 3), dict(n_layer=1, n_embd=16, n_head=2, block_size=10), 3)
    assert counts["attention_rows"] == 0


@settings(max_examples=12, deadline=None, derandomize=True)
@given(n_layer=st.integers(1, 2), head_dim=st.sampled_from([1, 2, 3, 4, 5, 8, 16]), n_head=st.integers(1, 4),
       block=st.integers(1, 20), alphabet=st.sampled_from(["ab", "abc", "abcdefghij"]),
       lengths=st.lists(st.integers(1, 24), min_size=1, max_size=4), seed=st.integers(0, 99),
       init=st.sampled_from(["normal", "equal", "negzero_qk", "denormal_v", "huge_qk"]))
def test_fuzzed_models_replay_the_compiled_numbers(n_layer, head_dim, n_head, block, alphabet, lengths, seed, init):
    rng = random.Random(seed)
    docs = ["".join(rng.choice(alphabet) for _ in range(n)) for n in lengths]
    config = dict(n_layer=n_layer, n_embd=head_dim * n_head, n_head=n_head, block_size=block)
    same_as_compiled(docs, config, 2, seed=seed, init=init)


SIMD_SHAPES = [(1, 8, 8, 5), (1, 15, 3, 9), (1, 96, 2, 33), (2, 64, 4, 12)]
CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from microgpt import _engine
from test_review_attention import run, docs_of
out = []
for L, E, H, B in {shapes!r}:
    got, _, _ = run({engine!r}, docs_of(2, "abcdefg", 1, B + 3, 3), dict(n_layer=L, n_embd=E, n_head=H, block_size=B), 3)
    out.append(got)
print(json.dumps([_engine.simd_lanes(), out]))
"""


def child(engine, simd=None):
    return python_child(CHILD.format(tests=str(Path(__file__).parent), shapes=SIMD_SHAPES, engine=engine), simd)


def test_every_simd_build_of_the_rows_gives_the_same_bits():
    want = json.loads(json.dumps([run("compiled", docs_of(2, "abcdefg", 1, B + 3, 3),
                                      dict(n_layer=L, n_embd=E, n_head=H, block_size=B), 3)[0]
                                  for L, E, H, B in SIMD_SHAPES]))
    for simd in (None, "avx2", "plain"):
        lanes, got = child("replay", simd)
        assert simd != "plain" or lanes == "plain"
        assert got == want, f"MICROGPT_SIMD={simd} ({lanes})"

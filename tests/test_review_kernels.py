"""The replay's newer backward kernels held to the compiled engine bit for bit
where their patterns are most likely to slip: two row blocks at once
(weight_grads.c, blocks.c block_same), a level's first vectors eight positions at
once (paired.c oct, first_groups), a head's 16- or 32-lane query or key in one
pass (matrix.c short16, short32), chains of adds in a register (singles.c): head
dims 15 to 33, vocabularies around 8, 16, 32, blocks of 1 to 17, documents
shorter than the recording, weights -0.0, denormal, 1.0, tied, huge or NaN (the
step then the model code's), gradients added to what the parameters held, the
AVX2 and plain builds; each path asserted taken where it applies."""
import json
import math
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from microgpt import available_engines, model
from support import python_child
from test_tape import grads_after_one_backward, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def hexed(x):
    # every bit (-0.0 apart from 0.0); a NaN's sign and payload are no part of the contract (support.same_float)
    return "nan" if x != x else struct.pack("<d", x).hex()


def docs_of(seed, vocab, longest, n):
    """n documents over vocab letters, the longest first (the recording), then shorter ones (n_used < n_pos)."""
    rng = random.Random(seed)
    docs = ["".join(rng.choice(ALPHABET[:vocab]) for _ in range(rng.randint(1, longest))) for _ in range(n)]
    first = "".join(ALPHABET[i % vocab] for i in range(longest))
    return [first] + docs


def set_weights(t, kind, seed):
    rng = random.Random(seed)
    for name, mat in t.sd.items():
        for row in mat:
            for j, p in enumerate(row):
                if kind == "negzero" and rng.random() < 0.3:
                    p.data = -0.0
                elif kind == "denormal" and rng.random() < 0.3:
                    p.data = rng.choice([5e-324, -5e-324, 1e-310, -0.0, 2.2e-308])
                elif kind == "ones" and rng.random() < 0.5:
                    p.data = 1.0  # a chain's local gradient exactly the 1.0 slot (singles.c)
                elif kind == "tied":
                    p.data = mat[0][j].data  # every row of a matrix alike
                elif kind == "huge" and rng.random() < 0.02:
                    p.data = rng.choice([1e300, -1e300, 1e200])
                elif kind == "nan" and rng.random() < 0.002:
                    p.data = math.nan


def run(engine, cfg, docs, steps, kind=None, seed=0):
    """Losses and every weight after each step, or the error the step raised (the reference's too)."""
    t = trainer(engine, docs=docs, **cfg)
    if kind:
        set_weights(t, kind, seed)
    out = []
    try:
        for _ in range(steps):
            out.append(hexed(t.train_step()[1]))
            out.append([hexed(p.data) for p in t.params])
    except (ValueError, OverflowError, ZeroDivisionError) as e:
        out.append(type(e).__name__)
    return out, t


@st.composite
def cases(draw):
    head = draw(st.sampled_from([1, 2, 4, 8, 15, 16, 17, 31, 32, 33]))
    n_head = draw(st.integers(1, 4 if head <= 17 else 2))
    bs = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 17]))
    cfg = dict(n_layer=draw(st.integers(1, 3)), n_embd=head * n_head, n_head=n_head, block_size=bs)
    vocab = draw(st.sampled_from([1, 2, 7, 8, 9, 15, 16, 17, 31, 32]))
    docs = docs_of(draw(st.integers(0, 99)), vocab, bs + draw(st.sampled_from([0, 0, 3])), draw(st.integers(1, 6)))
    kind = draw(st.sampled_from([None, "negzero", "denormal", "ones", "tied", "huge", "nan"]))
    return cfg, docs, kind


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(cases())
def test_fuzzed_models_replay_the_compiled_numbers(case):
    cfg, docs, kind = case
    (got, t), (want, _) = run("replay", cfg, docs, 3, kind), run("compiled", cfg, docs, 3, kind)
    assert got == want
    if kind is None and isinstance(got[-1], list):  # finite weights: every step after the recording replayed
        assert t.document_loss.model_steps == 0


def grads_hexed(t, tokens):
    loss, grads = grads_after_one_backward(t, tokens)
    unpack = lambda b: hexed(struct.unpack("<d", b)[0])  # noqa: E731
    return unpack(loss), [unpack(g) for g in grads]


# every parameter's gradient as the update reads it, for documents of every
# length up to the recording's (n_used 1 .. n_pos: eight-position groups cut
# short, in-place sums of a level's first vectors beside positions not used)
@pytest.mark.parametrize("cfg,kind", [(dict(n_layer=2, n_embd=32, n_head=2, block_size=17), None),
                                      (dict(n_layer=1, n_embd=64, n_head=2, block_size=9), "negzero"),
                                      (dict(n_layer=3, n_embd=24, n_head=3, block_size=12), "tied"),
                                      (dict(n_layer=2, n_embd=16, n_head=1, block_size=9), "denormal"),
                                      (dict(n_layer=1, n_embd=136, n_head=8, block_size=10), None)])
def test_every_document_length_after_a_longer_recording(cfg, kind):
    docs = docs_of(3, 17, cfg["block_size"], 4)
    replay, compiled = trainer("replay", docs=docs, **cfg), trainer("compiled", docs=docs, **cfg)
    set_weights(replay, kind, 2), set_weights(compiled, kind, 2)
    tok = replay.tokenizer
    grads_hexed(replay, tok.document_tokens(docs[0]))  # the recording: the whole block
    n_pos = replay.document_loss.tape.n_pos
    assert n_pos == cfg["block_size"]
    rng = random.Random(1)
    for n in list(range(1, n_pos + 1)) + [n_pos - 1, 8, 9]:
        tokens = tok.document_tokens("".join(rng.choice(tok.chars) for _ in range(n)))
        assert grads_hexed(replay, tokens) == grads_hexed(compiled, tokens), n
    assert replay.document_loss.recordings == 1 and replay.document_loss.model_steps == 0


# gradients added to what the parameters' .grad held (-0.0 kept where nothing is
# added; a start that is not finite: the step is the model code's)
@pytest.mark.parametrize("start", [-0.0, 5e-324, -1e308, math.inf])
def test_gradients_added_to_what_the_parameters_held(start):
    cfg, docs = dict(n_layer=2, n_embd=32, n_head=2, block_size=9), docs_of(2, 12, 9, 3)
    got = []
    for name in ("compiled", "replay"):
        t = trainer(name, docs=docs, **cfg)
        for d in docs:
            for p in t.params:
                p.grad = start
            got.append(grads_hexed(t, t.tokenizer.document_tokens(d)))
    assert got[:len(docs)] == got[len(docs):]
    assert t.document_loss.model_steps == (0 if math.isfinite(start) else len(docs))


def counts_after(cfg, docs, steps=2):
    replay, compiled = trainer("replay", docs=docs, **cfg), trainer("compiled", docs=docs, **cfg)
    assert run_steps(replay, steps) == run_steps(compiled, steps)
    runner = replay.document_loss
    assert runner.model_steps == 0
    return runner.tape, runner.tape.counts(runner.tape.n_pos)


def run_steps(t, steps):
    return [hexed(t.train_step()[1]) for _ in range(steps)] + [[hexed(p.data) for p in t.params]]


def wide():
    from microgpt import _engine  # (built: the module's skip)
    return _engine.simd_lanes() == "avx512"


# short16 / short32: a head of 16 or 32 lanes has its query and key summed in
# one pass; the eight-position kernel only where eight positions are recorded
@pytest.mark.parametrize("head,n_head,bs", [(16, 1, 5), (16, 3, 9), (32, 2, 3), (32, 1, 17)])
def test_a_heads_short_vectors_are_taken_at_16_and_32_lanes(head, n_head, bs):
    tape, c = counts_after(dict(n_layer=2, n_embd=head * n_head, n_head=n_head, block_size=bs), docs_of(5, 9, bs, 3))
    assert c["short_vectors"] > 0
    assert c["pulls_single_chained"] > 0
    assert (c["vectors_by_eight"] > 0) == (wide() and tape.n_pos >= 8)


@pytest.mark.parametrize("bs", [1, 2, 3, 5, 7])
def test_fewer_than_eight_positions_never_take_the_eight_position_kernel(bs):
    tape, c = counts_after(dict(n_layer=2, n_embd=16, n_head=2, block_size=bs), docs_of(2, 8, bs, 3))
    assert tape.n_pos == bs
    assert c["vectors_by_eight"] == 0
    if bs >= 2:
        assert c["vectors_paired"] > 0


# two row blocks that read the same positions' vectors, at widths that are no
# multiple of 8 or 16: every matrix's rows eight by eight (AVX-512), none on the narrower builds
@pytest.mark.parametrize("cfg", [dict(n_layer=2, n_embd=12, n_head=1, block_size=8),
                                 dict(n_layer=1, n_embd=24, n_head=3, block_size=5),
                                 dict(n_layer=3, n_embd=40, n_head=2, block_size=9),
                                 dict(n_layer=1, n_embd=72, n_head=4, block_size=4)])
def test_paired_row_blocks_at_odd_widths(cfg):
    docs = docs_of(4, 19, cfg["block_size"], 3)
    replay, compiled = trainer("replay", docs=docs, **cfg), trainer("compiled", docs=docs, **cfg)
    assert run_steps(replay, 2) == run_steps(compiled, 2)
    assert replay.document_loss.model_steps == 0
    reading_one_vector = [len(replay.sd["lm_head"])]
    for layer in range(cfg["n_layer"]):
        m = {n: len(replay.sd[f"layer{layer}.{n}"]) for n in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")}
        reading_one_vector += [m["attn_wq"] + m["attn_wk"] + m["attn_wv"], m["attn_wo"], m["mlp_fc1"], m["mlp_fc2"]]
    want = sum(rows // 8 * 8 for rows in reading_one_vector) if wide() else 0
    assert replay.document_loss.tape.counts(1)["weight_blocks_paired"] * 4 == want


@pytest.mark.parametrize("matrix,value", [("layer0.attn_wk", math.nan), ("layer1.attn_wo", math.nan),
                                          ("layer0.mlp_fc1", math.inf), ("layer1.attn_wq", -math.inf)])
def test_a_gradient_that_is_not_finite_hands_the_step_back(matrix, value):
    # one weight of a paired row block (or a head's query / key) not finite: its
    # row's gradients are not, and the replay's backward hands the step to the model code
    cfg = dict(n_layer=2, n_embd=32, n_head=2, block_size=9)
    docs = docs_of(6, 12, 9, 4)
    replay, compiled = trainer("replay", docs=docs, **cfg), trainer("compiled", docs=docs, **cfg)
    tok = replay.tokenizer
    for t in (replay, compiled):
        grads_hexed(t, tok.document_tokens(docs[0]))  # replay: the recording
        t.sd[matrix][0][1].data = value
    tokens = tok.document_tokens(docs[2])
    got, want = grads_hexed(replay, tokens), grads_hexed(compiled, tokens)
    assert got == want
    assert any(g == "nan" for g in got[1])
    assert replay.document_loss.model_steps == 1


# model code written otherwise (the recorder's shapes still recognised, or not):
# chains of adds whose local gradients are exactly 1.0 (singles.c's register,
# its 1.0 skipped), a row's sum in two halves (no matrix-row groups: every
# kernel's plan must refuse its pattern), a plain Python sum instead of dot
def _rms_chain(x, rms=model.rmsnorm):
    return [(((xi + 0.0) + 0.0) * 1.0) + 0.0 for xi in rms(x)]


def _soft_chain(logits, soft=model.softmax):
    return soft([(((v * 1.0) + 0.0) + 1.0) - 1.0 for v in logits])


def _halves(x, w):
    h = len(x) // 2
    return [model.dot(wo[:h], x[:h]) + model.dot(wo[h:], x[h:]) for wo in w]


def _plain(x, w):
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


@pytest.mark.parametrize("attr,fn,chained", [("rmsnorm", _rms_chain, True), ("softmax", _soft_chain, True),
                                             ("linear", _halves, True), ("linear", _plain, False)])
def test_model_code_written_otherwise(monkeypatch, attr, fn, chained):
    cfg, docs = dict(n_layer=2, n_embd=32, n_head=2, block_size=9), docs_of(8, 12, 9, 4)
    _, plain = counts_after(cfg, docs)
    monkeypatch.setattr(model, attr, fn)
    tape, c = counts_after(cfg, docs)  # (bit for bit, every step replayed)
    assert (c["pulls_single_chained"] > 2 * plain["pulls_single_chained"]) == chained
    if fn is _halves:
        assert c["vectors_by_eight"] == c["vectors_paired"] == c["weight_blocks_paired"] == 0


# A replayed loss's backward() twice: the reference adds the second pass onto the first's
# inner gradients; a replay keeps none, so the second raises and the first's grads stand.
def test_a_second_backward_of_one_replayed_loss_raises_and_leaves_the_first():
    cfg, docs = dict(n_layer=1, n_embd=4, n_head=1, block_size=4), ["abc", "ba", "cab"]
    got = []
    for name in ("compiled", "replay"):
        t = trainer(name, docs=docs, **cfg)
        with t.engine.graph():
            loss = t.document_loss(t.tokenizer.document_tokens(docs[0]))
            loss.backward()
            got.append([hexed(p.grad) for p in t.params])
            if name == "replay":
                with pytest.raises(RuntimeError, match="runs once"):
                    loss.backward()
                assert [hexed(p.grad) for p in t.params] == got[-1]
    assert got[1] == got[0]


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from microgpt import _engine
from test_review_kernels import CONFIGS, run, docs_of
out = [run({engine!r}, cfg, docs_of(7, 17, cfg["block_size"], 4), 3, kind)[0] for cfg, kind in CONFIGS]
print(json.dumps([_engine.simd_lanes(), out]))
"""
CONFIGS = [(dict(n_layer=2, n_embd=32, n_head=2, block_size=17), None),
           (dict(n_layer=1, n_embd=33, n_head=1, block_size=9), "ones"),
           (dict(n_layer=3, n_embd=20, n_head=4, block_size=8), "negzero"),
           (dict(n_layer=1, n_embd=64, n_head=2, block_size=7), "denormal")]


def child(engine, simd):
    return python_child(CHILD.format(tests=str(Path(__file__).parent), engine=engine), simd)


@pytest.mark.parametrize("simd", ["avx2", "plain"])
def test_narrower_builds_replay_the_compiled_numbers(simd):
    want = [run("compiled", cfg, docs_of(7, 17, cfg["block_size"], 4), 3, kind)[0] for cfg, kind in CONFIGS]
    lanes, got = child("replay", simd)
    assert lanes in ((simd,) if simd == "plain" else ("avx2", "plain"))
    assert got == json.loads(json.dumps(want))

"""Adversarial checks of the queries' and keys' gradients summed by the softmax
rows (src/tape/attention_keys.c, attention.c): a replay gives the compiled
engine's losses, gradients and weights bit for bit with one to eight heads, head
dims that are not multiples of eight, blocks of 1 to 40 positions, documents
shorter than the recording, re-recordings as longer documents come, gradients a
user writes between steps, sampling after training, and each build of the
kernels (MICROGPT_SIMD in a child process)."""
import json
import random
from pathlib import Path

import pytest

from microgpt import available_engines
from microgpt.sampling import make_sampler, sample
from support import bits, python_child
from test_tape import every_length_replays_exactly, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

# (n_embd, n_head): head dims 4, 12, 20 and 28 (not multiples of eight) take the
# rows' sums; 1, 5 and 7 keep the entries' own lists (both must be exact)
SHAPES = [(32, 8), (8, 2), (48, 4), (24, 2), (20, 1), (28, 1), (8, 8), (10, 2), (7, 1)]


def docs_growing(seed, block):
    """Documents short then longer (each longer one past the recording re-records),
    then short again, some longer than the block (cut to it)."""
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice("abcdefghijklmno") for _ in range(k))
    lengths = [1, 2, 1, 3, 5, 2, 9, 4, 17, 3, 33, 1, 45, 6, 2, block, block + 3, 1]
    return [word(k) for k in lengths]


def run(t, steps, poke=None):
    """Losses, every parameter's grad before Adam and weights after each step, as bits;
    poke(t, step) runs before each step (it may write .grad)."""
    out = []
    grads = []
    update = t.update

    def spy(lr_t, step):
        grads.append([bits(float(p.grad)) for p in t.params])
        return update(lr_t, step)

    t.update = spy
    for k in range(steps):
        if poke is not None:
            poke(t, k)
        _, loss, _ = t.train_step()
        out.append((bits(loss), grads[-1], [bits(p.data) for p in t.params]))
    return out


def both(steps, poke=None, **cfg):
    got = {name: trainer(name, **cfg) for name in ("replay", "compiled")}
    r, c = run(got["replay"], steps, poke), run(got["compiled"], steps, poke)
    for k, (a, b) in enumerate(zip(r, c)):
        assert a[0] == b[0], f"loss of step {k}"
        assert a[1] == b[1], f"grads of step {k}"
        assert a[2] == b[2], f"weights after step {k}"
    return got["replay"]


@pytest.mark.parametrize("n_embd, n_head", SHAPES)
@pytest.mark.parametrize("block", [1, 3, 17, 40])
def test_heads_and_blocks_with_re_recordings(n_embd, n_head, block):
    docs = docs_growing(n_embd * 100 + block, block)
    t = both(len(docs), docs=docs, n_layer=1, n_embd=n_embd, n_head=n_head, block_size=block)
    assert t.document_loss.model_steps == 0
    assert (t.document_loss.recordings > 1) == (block > 16)  # 16 positions, then more as longer ones come
    tape = t.document_loss.tape
    if (n_embd // n_head) % 4 == 0 and block > 1:  # the rows sum every query and key (the last position's by lists)
        assert tape.counts(tape.n_pos)["keys_from_rows"] == n_embd * (2 * tape.n_pos - 1)


def test_two_layers_eight_heads_longer_documents_after_shorter():
    docs = docs_growing(3, 24)
    t = both(len(docs), docs=docs, n_layer=2, n_embd=32, n_head=8, block_size=24)
    assert t.document_loss.recordings > 1  # a longer document re-recorded


def poke_grads(t, k):
    # before a step, the user leaves numbers in some grads: backward adds to them
    rng = random.Random(k)
    ps = t.params
    for _ in range(30):
        p = ps[rng.randrange(len(ps))]
        p.grad = rng.choice([0.25, -3, 1e-300, 7.5e3, -0.0, 2, rng.gauss(0, 1)])


@pytest.mark.parametrize("n_embd, n_head, block", [(12, 3, 9), (24, 2, 20), (32, 8, 6), (10, 2, 7)])
def test_grads_written_between_steps(n_embd, n_head, block):
    docs = docs_growing(n_embd, block)
    t = both(len(docs), poke_grads, docs=docs, n_layer=1, n_embd=n_embd, n_head=n_head, block_size=block)
    assert t.document_loss.model_steps == 0  # every step replayed, the written grads added to


def test_sampling_after_training_on_the_recording():
    cfg = dict(docs=docs_growing(5, 20), n_layer=1, n_embd=24, n_head=2, block_size=20)  # re-recorded at 20
    names = {}
    for name in ("replay", "compiled"):
        t = trainer(name, **cfg)
        run(t, 18)
        assert name == "compiled" or t.document_loss.recordings > 1
        eng, sd, c, tok = t.engine, t.sd, t.config, t.tokenizer
        random.seed(11)
        own = make_sampler(eng, sd, c, 3)
        on_tape = make_sampler(eng, sd, c, 3, trained=t.document_loss)
        names[name] = [sample(eng, sd, c, tok, sampler=s) for s in (own, on_tape) for _ in range(3)]
        # and training goes on after sampling, exactly
        names[name].append([x[2] for x in run(t, 4)])
    assert names["replay"] == names["compiled"]


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from microgpt import _engine
from test_review11_attention import both, docs_growing
for n_embd, n_head, block in [(24, 2, 11), (32, 8, 7), (20, 1, 19), (10, 2, 5)]:
    docs = docs_growing(block, block)
    both(len(docs), docs=docs, n_layer=1, n_embd=n_embd, n_head=n_head, block_size=block)
print(json.dumps(_engine.simd_lanes()))
"""


@pytest.mark.parametrize("simd", ["avx2", "plain"])
def test_each_build_of_the_kernels(simd):
    lanes = python_child(CHILD.format(tests=str(Path(__file__).parent)), simd)
    assert lanes == "plain" if simd == "plain" else lanes in ("avx2", "plain")


@pytest.mark.parametrize("n_embd, n_head", [(24, 2), (20, 1), (32, 8)])
def test_every_shorter_length_after_the_recording(n_embd, n_head):
    # a replay of n positions starts each key's sum at its row of position n - 1
    t = every_length_replays_exactly("abcdefghijklmn", n_embd, n_layer=2, n_embd=n_embd, n_head=n_head,
                                     block_size=14)
    assert t.document_loss.tape.counts(5)["keys_from_rows"] == 2 * n_embd * (5 + 5)


def test_the_pure_engine_agrees_too():
    cfg = dict(docs=docs_growing(9, 7), n_layer=1, n_embd=8, n_head=2, block_size=7)
    want = run(trainer("pure", **cfg), 8, poke_grads)
    assert run(trainer("replay", **cfg), 8, poke_grads) == want

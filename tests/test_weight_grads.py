"""The row blocks' weights' gradients (weight_grads.c) check that they are
finite as they write them: two blocks at once in registers (AVX-512: a - a is
0 only for a finite sum), the weights past the last 16 by a scan. A weight
whose gradient starts from inf (one the model code left there) is the only
gradient that is not finite: the step must go back to the model code, whose
numbers the replay then gives bit for bit.

A block whose gradients all start from +0.0 (a step after Adam) is summed in
the arena's column itself, the others in the tape's copy: both must give the
model code's numbers, and a step handed back must find the column as it was."""
import math

import pytest

from microgpt import available_engines
from test_tape import grads_after_one_backward, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

DOCS = ["abcdefghijklmnop"[:k] for k in range(3, 17)] + ["ponmlkjihgfedcba", "aaaaaaaa", "bc"]


# n_embd 32: every weight in a chunk of 16; n_embd 20: column 18 past the last
# chunk of 16 (lanes of four), column 2 inside it (the chunks); n_embd 18:
# column 17 past the last four (one by one)
@pytest.mark.parametrize("config,matrix,row,col", [
    (dict(n_layer=1, n_embd=32, n_head=4, block_size=12), "layer0.attn_wq", 9, 5),
    (dict(n_layer=1, n_embd=32, n_head=4, block_size=12), "layer0.mlp_fc1", 70, 31),
    (dict(n_layer=2, n_embd=20, n_head=2, block_size=16), "layer1.attn_wo", 3, 18),
    (dict(n_layer=2, n_embd=20, n_head=2, block_size=16), "layer1.attn_wo", 12, 2),
    (dict(n_layer=1, n_embd=18, n_head=2, block_size=16), "layer0.attn_wq", 5, 17),
])
def test_a_weight_gradient_that_starts_from_inf_hands_the_step_back(config, matrix, row, col):
    replay, compiled = trainer("replay", docs=DOCS, **config), trainer("compiled", docs=DOCS, **config)
    longest = replay.tokenizer.document_tokens(max(DOCS, key=len))
    grads_after_one_backward(replay, longest)  # the recording
    tokens = replay.tokenizer.document_tokens(DOCS[7])
    assert grads_after_one_backward(replay, tokens) == grads_after_one_backward(compiled, tokens)
    assert replay.document_loss.model_steps == 0
    for t in (replay, compiled):
        t.sd[matrix][row][col].grad = math.inf
    got, want = grads_after_one_backward(replay, tokens), grads_after_one_backward(compiled, tokens)
    assert got == want
    assert replay.document_loss.model_steps == 1  # the replay's backward handed the step back


# grads accumulated over backwards without zeroing (every block starts from
# numbers, not zeros), or one matrix's weight not zero while the rest are
# (its blocks in the tape's copy, the others in the column)
@pytest.mark.parametrize("nonzero", [None, ("layer0.mlp_fc1", 70, 31), ("lm_head", 2, 3)])
def test_blocks_that_start_from_zeros_or_from_numbers_give_the_model_codes_gradients(nonzero):
    config = dict(n_layer=1, n_embd=32, n_head=4, block_size=12)
    replay, compiled = trainer("replay", docs=DOCS, **config), trainer("compiled", docs=DOCS, **config)
    longest = replay.tokenizer.document_tokens(max(DOCS, key=len))
    grads_after_one_backward(replay, longest)  # the recording
    for t in (replay, compiled):
        if nonzero is not None:
            name, row, col = nonzero
            t.sd[name][row][col].grad = 0.25
        for doc in DOCS[4:7] if nonzero is None else DOCS[4:5]:  # (no zeroing between)
            with t.engine.graph():
                t.document_loss(t.tokenizer.document_tokens(doc)).backward()
    assert [p.grad for p in replay.params] == [p.grad for p in compiled.params]
    assert replay.document_loss.model_steps == 0


def test_a_step_handed_back_after_blocks_summed_in_the_column_finds_them_as_they_were():
    # a gradient outside the blocks starts from inf: the blocks have already
    # summed theirs in the column when the others are checked
    config = dict(n_layer=1, n_embd=32, n_head=4, block_size=12)
    replay, compiled = trainer("replay", docs=DOCS, **config), trainer("compiled", docs=DOCS, **config)
    longest = replay.tokenizer.document_tokens(max(DOCS, key=len))
    grads_after_one_backward(replay, longest)  # the recording
    tokens = replay.tokenizer.document_tokens(DOCS[7])
    for t in (replay, compiled):
        t.sd["wpe"][1][2].grad = math.inf
    assert grads_after_one_backward(replay, tokens) == grads_after_one_backward(compiled, tokens)
    assert replay.document_loss.model_steps == 1


# A run of blocks that read the same vectors (a matrix's rows; attn_wq, wk and
# wv's together) packs them once: every block of a run but its first sums from
# the vectors packed for a block before, on every build (two blocks at once
# with AVX-512, else one by one); rows of a multiple of 16 (n_embd 32) and not
# (20: chunks of 16 and a rest of 4, mlp_fc2's 80 long; 18: a rest of 2, and
# mlp_fc2's 72: of 8).
@pytest.mark.parametrize("config", [dict(n_layer=2, n_embd=32, n_head=4, block_size=12),
                                    dict(n_layer=1, n_embd=20, n_head=2, block_size=16),
                                    dict(n_layer=1, n_embd=18, n_head=2, block_size=16)])
def test_blocks_that_read_the_same_vectors_pack_them_once(config):
    replay, compiled = trainer("replay", docs=DOCS, **config), trainer("compiled", docs=DOCS, **config)
    longest = replay.tokenizer.document_tokens(max(DOCS, key=len))
    grads_after_one_backward(replay, longest)  # the recording
    for doc in DOCS[2:9]:
        tokens = replay.tokenizer.document_tokens(doc)
        assert grads_after_one_backward(replay, tokens) == grads_after_one_backward(compiled, tokens)
    c = replay.document_loss.tape.counts(replay.document_loss.tape.n_pos)
    runs = [len(replay.sd["lm_head"])]  # the rows of each run (blocks of four: rows // 4)
    for layer in range(config["n_layer"]):
        m = {n: len(replay.sd[f"layer{layer}.{n}"]) for n in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")}
        runs += [m["attn_wq"] + m["attn_wk"] + m["attn_wv"], m["attn_wo"], m["mlp_fc1"], m["mlp_fc2"]]
    assert c["weight_vectors_reused"] == sum(rows // 4 - 1 for rows in runs)
    assert replay.document_loss.model_steps == 0

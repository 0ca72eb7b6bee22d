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
# chunk of 16 (the scan), column 2 inside it (the registers)
@pytest.mark.parametrize("config,matrix,row,col", [
    (dict(n_layer=1, n_embd=32, n_head=4, block_size=12), "layer0.attn_wq", 9, 5),
    (dict(n_layer=1, n_embd=32, n_head=4, block_size=12), "layer0.mlp_fc1", 70, 31),
    (dict(n_layer=2, n_embd=20, n_head=2, block_size=16), "layer1.attn_wo", 3, 18),
    (dict(n_layer=2, n_embd=20, n_head=2, block_size=16), "layer1.attn_wo", 12, 2),
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


# Two blocks at once take their reads' lists from the block before's where each
# read's sums are one constant further on (a matrix's next rows, or the next
# matrix reading the same vector) and the rows are a multiple of 16 long: every
# matrix at n_embd 32; at n_embd 20 mlp_fc2's only (80 long: 20 rows, blocks
# 0-1 find their lists, 2-3 shift them, 4 runs alone), the others' lists their own.
@pytest.mark.parametrize("config", [dict(n_layer=2, n_embd=32, n_head=4, block_size=12),
                                    dict(n_layer=1, n_embd=20, n_head=2, block_size=16)])
def test_blocks_lists_shifted_from_the_block_befores_give_the_model_codes_gradients(config):
    from microgpt import _engine
    replay, compiled = trainer("replay", docs=DOCS, **config), trainer("compiled", docs=DOCS, **config)
    longest = replay.tokenizer.document_tokens(max(DOCS, key=len))
    grads_after_one_backward(replay, longest)  # the recording
    for doc in DOCS[2:9]:
        tokens = replay.tokenizer.document_tokens(doc)
        assert grads_after_one_backward(replay, tokens) == grads_after_one_backward(compiled, tokens)
    c = replay.document_loss.tape.counts(replay.document_loss.tape.n_pos)
    wide = _engine.simd_lanes() == "avx512"
    assert c["weight_lists_shifted"] == (0 if not wide else 3 if config["n_embd"] == 20 else c["weight_lists_shifted"])
    assert (c["weight_lists_shifted"] > 0) == wide
    assert c["weight_lists_shifted"] < c["weight_blocks_paired"] or not wide  # (a matrix's first pair: its own)
    assert replay.document_loss.model_steps == 0

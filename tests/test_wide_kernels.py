"""The backward's matrix kernels with eight lanes a register (AVX-512, where the
processor has it; else their AVX2 or plain builds run and these are the same
checks of those): a vector's gradients over a matrix's rows (one position, two
or four at once) and the row blocks' weights' gradients (read from the arena's
grad column, each read's four row sums' gradients in place). Widths that fill
whole registers and widths that leave a remainder for the narrower build are
replayed bit for bit as the compiled engine computes, and so are parameters
that are not one block of the arena (the blocks then start from the tape's own
copy of their gradients)."""
import math
import random
import struct

import pytest

from microgpt import available_engines, get_engine
from microgpt.data import Tokenizer
from microgpt.model import Config, init_state_dict
from microgpt.train import Trainer
from test_tape import grads_after_one_backward, losses_and_weights, replayed_as_compiled, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

DOCS = ["abcdefghijklmnop"[:k] for k in range(3, 17)] + ["ponmlkjihgfedcba", "aaaaaaaa", "bc"]


# n_embd 64: 64 lanes (16 x 4 for the rows' weights, 4 x 16 for the vectors);
# 48 and 40: 16-lane steps then an 8- or 4-wide rest; 20: one step of 16 and 4 over
@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=64, n_head=4, block_size=12),
                                    dict(n_layer=2, n_embd=48, n_head=4, block_size=9),
                                    dict(n_layer=1, n_embd=40, n_head=2, block_size=10),
                                    dict(n_layer=2, n_embd=20, n_head=2, block_size=16)])
def test_wide_matrix_kernels_replay_bit_for_bit(config):
    replay = replayed_as_compiled(5, docs=DOCS, **config)
    runner = replay.document_loss
    assert runner.refused is None and runner.model_steps == 0, "every step after the recording was replayed"


def test_row_blocks_of_parameters_that_are_not_one_block_of_nodes():
    # a stray node between two matrices: the parameters are read one by one,
    # and the row blocks' gradients start from the tape's copy, not the arena's column
    made = []

    def run(name):
        eng = get_engine(name)

        def make(x):
            if len(made) == 4000:  # (inside the first layer's matrices)
                made.append(eng.Value(0.0))  # not a parameter, kept alive by the list
            v = eng.Value(x)
            made.append(v)
            return v

        made.clear()
        random.seed(7)
        tok = Tokenizer.from_documents(DOCS)
        cfg = Config(vocab_size=tok.vocab_size, n_layer=1, n_embd=32, n_head=2, block_size=9)
        t = Trainer(eng, init_state_dict(make, cfg), cfg, list(DOCS), tok, num_steps=100)
        return losses_and_weights(t, 6), t

    (want, _), (got, t) = run("compiled"), run("replay")
    assert got == want
    assert t.document_loss.model_steps == 0
    assert not t.document_loss.tape.counts(1)["params_in_one_block"]



# A vector's gradients over a matrix's rows, run first at a level (paired.c):
# a pull list is read from its first pull and a step where its parents are
# consecutive nodes and its weights a constant step apart (the vectors read by
# attn_wo, mlp_fc1 and mlp_fc2), and from its indices where they are not (the
# vector read by attn_wq, attn_wk and attn_wv: the reference's walk takes their
# rows' sums four by four from each matrix in turn); both in one step, bit for
# bit as the compiled engine computes
@pytest.mark.parametrize("config", [dict(n_layer=2, n_embd=16, n_head=2, block_size=9),
                                    dict(n_layer=1, n_embd=32, n_head=4, block_size=12)])
def test_first_vectors_lists_read_from_their_steps_or_their_indices(config):
    replay = replayed_as_compiled(4, docs=DOCS, **config)
    assert replay.document_loss.model_steps == 0


@pytest.mark.parametrize("matrix", ["layer0.attn_wq", "layer0.mlp_fc2", "lm_head"])
def test_a_row_blocks_gradient_that_is_not_finite_takes_the_model_code(matrix):
    # the row blocks check their weights' gradients as they write them (the
    # other parameters' are checked before anything is written): a weight that
    # is nan makes its row's gradients nan, and the step is the model code's
    replay, compiled = trainer("replay", docs=DOCS), trainer("compiled", docs=DOCS)
    longest = replay.tokenizer.document_tokens(max(DOCS, key=len))
    for t in (replay, compiled):
        grads_after_one_backward(t, longest)  # replay: the recording
        t.sd[matrix][1][2].data = math.nan
    tokens = replay.tokenizer.document_tokens(DOCS[5])
    got, want = grads_after_one_backward(replay, tokens), grads_after_one_backward(compiled, tokens)
    assert got == want
    assert any(not math.isfinite(struct.unpack("<d", g)[0]) for g in got[1])
    assert replay.document_loss.model_steps == 1  # the replay's backward handed the step back


# Two row blocks of one matrix that read the same positions' vectors (every
# block but a matrix's odd one out): their weights' gradients run at once
# (weight_grads.c: eight rows, each vector's chunk loaded once, with AVX-512),
# in chunks of 16 weights (n_embd 32) and with a rest (20: 16 and 4 over, five
# blocks a 20-row matrix: one alone, and lm_head's row past its blocks), their vectors in place or gathered (attn_wo's:
# the heads' outputs side by side); bit for bit as the compiled engine computes
@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=32, n_head=4, block_size=12),
                                    dict(n_layer=2, n_embd=20, n_head=2, block_size=16)])
def test_two_row_blocks_weights_gradients_run_at_once(config):
    replay = replayed_as_compiled(4, docs=DOCS, **config)
    runner = replay.document_loss
    assert runner.model_steps == 0
    c = runner.tape.counts(1)
    # the rows that read one vector, eight by eight (attn_wq, wk and wv's together: a block of
    # one and the next's first pair; lm_head's 17 rows: 16 in blocks, all paired)
    reading_one_vector = [len(replay.sd["lm_head"])]
    for layer in range(config["n_layer"]):
        m = {name: len(replay.sd[f"layer{layer}.{name}"]) for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")}
        reading_one_vector += [m["attn_wq"] + m["attn_wk"] + m["attn_wv"], m["attn_wo"], m["mlp_fc1"], m["mlp_fc2"]]
    from microgpt import _engine  # (built: the module's skip)
    wide = _engine.simd_lanes() == "avx512"  # (the AVX2 and plain builds run block by block)
    assert c["weight_blocks_paired"] * 4 == (sum(rows // 8 * 8 for rows in reading_one_vector) if wide else 0)


# A vector of 16 or 32 entries read by rows (an attention head's query or key,
# read by its logits): its gradients summed in one pass over its pull list
# (matrix.c short16, short32); other widths (12 here) keep the chunked path
@pytest.mark.parametrize("config,taken", [(dict(n_layer=1, n_embd=32, n_head=2, block_size=12), True),
                                          (dict(n_layer=2, n_embd=64, n_head=4, block_size=9), True),
                                          (dict(n_layer=1, n_embd=48, n_head=4, block_size=10), False)])
def test_a_heads_vectors_gradients_in_one_pass(config, taken):
    replay = replayed_as_compiled(4, docs=DOCS, **config)
    runner = replay.document_loss
    assert runner.model_steps == 0
    assert (runner.tape.counts(1)["short_vectors"] > 0) == taken


# A level's first vectors, eight positions at once where eight in a row read a
# matrix's rows alike (paired.c oct, with AVX-512: each chunk of a row's weights
# loaded once for eight), four and two for the rest; n_embd 40: a rest of 8
# lanes past the 16-lane chunks, four positions at a time
@pytest.mark.parametrize("config", [dict(n_layer=2, n_embd=32, n_head=4, block_size=16),
                                    dict(n_layer=1, n_embd=40, n_head=2, block_size=14)])
def test_first_vectors_eight_positions_at_once(config):
    from microgpt import _engine  # (built: the module's skip)
    docs = ["abcdefghijklmnopq", "qponmlkjihgfedcba"] + DOCS
    replay = replayed_as_compiled(4, docs=docs, **config)
    runner = replay.document_loss
    assert runner.model_steps == 0
    c = runner.tape.counts(runner.tape.n_pos)
    assert c["vectors_paired"] > 0
    assert (c["vectors_by_eight"] > 0) == (_engine.simd_lanes() == "avx512")

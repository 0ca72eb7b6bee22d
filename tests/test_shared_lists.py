"""Heads' outputs read by one matrix's rows (x_attn into attn_wo): each head's
16 or 32 entries a short vector of its own, their pull lists the same parents
in the same order; the replay sums two to four of them side by side in one
pass over the list (matrix.c shared16x*, shared32x*; aliases.c share_plan).
Held to the compiled engine bit for bit, with the path asserted taken, on the
AVX-512, AVX2 and plain builds, for documents shorter than the recording."""
import json
from pathlib import Path

import pytest

from microgpt import available_engines, model
from support import python_child
from test_attention_rows import softmax_scaled_total
from test_review_kernels import docs_of, run, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

# (config, weights): heads of 16 and 32, three and four of them, one to three layers
CASES = [(dict(n_layer=1, n_embd=48, n_head=3, block_size=6), None),
         (dict(n_layer=2, n_embd=64, n_head=4, block_size=9), "negzero"),
         (dict(n_layer=1, n_embd=96, n_head=3, block_size=5), "denormal"),
         (dict(n_layer=3, n_embd=128, n_head=4, block_size=4), "tied"),
         (dict(n_layer=2, n_embd=64, n_head=4, block_size=8), "huge")]


def shared_count(cfg, docs):
    t = trainer("replay", docs=docs, **cfg)
    t.train_step()
    tape = t.document_loss.tape
    return tape.counts(tape.n_pos)["vectors_shared_list"]


@pytest.mark.parametrize("cfg,kind", CASES)
def test_heads_outputs_share_one_list_and_replay_the_compiled_numbers(cfg, kind):
    docs = docs_of(11, 13, cfg["block_size"], 4)
    assert shared_count(cfg, docs) > 0
    (got, t), (want, _) = run("replay", cfg, docs, 3, kind), run("compiled", cfg, docs, 3, kind)
    assert got == want
    if kind is None:
        assert t.document_loss.model_steps == 0


@pytest.mark.parametrize("cfg,kind", CASES)
def test_every_head_shares_the_last_heads_list_where_it_runs_across_positions(cfg, kind):
    """The last head's output is its level's top, run first with the other
    positions' (paired.c); it leads the shared list too, all heads as one
    vector: every head of every position is counted, not all but the last."""
    docs = docs_of(11, 13, cfg["block_size"], 4)
    t = trainer("replay", docs=docs, **cfg)
    t.train_step()
    c = t.document_loss.tape.counts(t.document_loss.tape.n_pos)
    assert c["vectors_paired"] > 0
    assert c["vectors_shared_list"] == cfg["n_head"] * cfg["n_layer"] * t.document_loss.tape.n_pos


@pytest.mark.parametrize("cfg,kind", CASES)
def test_a_positions_heads_queries_and_keys_run_side_by_side_and_replay_the_compiled_numbers(cfg, kind, monkeypatch):
    """A position's heads' queries (and keys) are consecutive backward entries,
    each its own list, their parents at the same positions: summed in one
    pass (matrix.c short16xN with own lists). Every one of them but the last
    position's keys (one pull each, grouped otherwise). Where the heads'
    softmax rows are taken whole, the rows sum them (attention_keys.c): here
    a softmax of another shape (its total times 1.0) is not, so the lists do."""
    monkeypatch.setattr(model, "softmax", softmax_scaled_total)
    docs = docs_of(11, 13, cfg["block_size"], 4)
    t = trainer("replay", docs=docs, **cfg)
    t.train_step()
    n = t.document_loss.tape.n_pos
    c = t.document_loss.tape.counts(n)
    assert c["attention_rows"] == 0 and c["keys_from_rows"] == 0
    assert c["vectors_side_by_side"] == cfg["n_head"] * cfg["n_layer"] * (2 * n - 1)
    (got, _), (want, _) = run("replay", cfg, docs, 3, kind), run("compiled", cfg, docs, 3, kind)
    assert got == want


@pytest.mark.parametrize("cfg,kind", CASES)
def test_the_heads_rows_sum_their_queries_and_keys_and_replay_the_compiled_numbers(cfg, kind):
    """With the reference's softmax, the rows sum every query and key but the
    last position's keys (attention_keys.c): none is left to the lists."""
    docs = docs_of(11, 13, cfg["block_size"], 4)
    t = trainer("replay", docs=docs, **cfg)
    t.train_step()
    n = t.document_loss.tape.n_pos
    c = t.document_loss.tape.counts(n)
    assert c["keys_from_rows"] == cfg["n_embd"] * cfg["n_layer"] * (2 * n - 1)
    assert c["vectors_side_by_side"] == 0
    (got, _), (want, _) = run("replay", cfg, docs, 3, kind), run("compiled", cfg, docs, 3, kind)
    assert got == want


@pytest.mark.parametrize("cfg", [dict(n_layer=2, n_embd=24, n_head=3, block_size=6),
                                 dict(n_layer=1, n_embd=60, n_head=3, block_size=5)])
def test_heads_not_16_or_32_wide_share_nothing(cfg):
    assert shared_count(cfg, docs_of(3, 9, cfg["block_size"], 2)) == 0


CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from test_shared_lists import CASES, run, docs_of
print(json.dumps([run({engine!r}, cfg, docs_of(11, 13, cfg["block_size"], 4), 3, kind)[0] for cfg, kind in CASES]))
"""


@pytest.mark.parametrize("simd", ["avx2", "plain"])
def test_narrower_builds_share_lists_exactly(simd):
    got = python_child(CHILD.format(tests=str(Path(__file__).parent), engine="replay"), simd)
    want = [run("compiled", cfg, docs_of(11, 13, cfg["block_size"], 4), 3, kind)[0] for cfg, kind in CASES]
    assert got == json.loads(json.dumps(want))

"""A level's matrices over every position at once (panels.c): a unit of
sixteen rows (a run of four groups) in sixteen registers with AVX-512, a
unit of four rows (lm_head's rows past its runs) four by four; positions in
blocks of eight, the last block partly filled; with AVX-512 two blocks at a
time eight rows at a time, a block left over alone. Bit for bit the compiled
engine's numbers, forward and backward, with every SIMD width the processor
has (tests/test_simd_lanes.py narrows them)."""
import pytest

from microgpt import available_engines
from test_tape import losses_and_weights, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

# 13 letters: lm_head's 14 rows are no multiple of 16 (three runs short: 4-row units);
# block_size 13: one block of eight positions and one of five
DOCS = ["abcdefghijklm"[k:] + "abcdefghijklm"[:k] for k in range(13)]


@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=16, n_head=2, block_size=13),
                                    dict(n_layer=2, n_embd=32, n_head=4, block_size=13)])
def test_units_of_sixteen_and_of_four_rows_replay_exactly(config):
    replay, compiled = trainer("replay", docs=DOCS, **config), trainer("compiled", docs=DOCS, **config)
    assert losses_and_weights(replay, 5) == losses_and_weights(compiled, 5)
    runner = replay.document_loss
    assert runner.model_steps == 0
    assert runner.tape.counts(runner.tape.n_pos)["matrix_panels"] > 0


# 21 letters, block_size 20: three blocks of positions (8, 8, 4): two side by
# side, the third alone (sixteen rows, or four)
LONG = ["abcdefghijklmnopqrstu"[k:] + "abcdefghijklmnopqrstu"[:k] for k in range(21)]


def test_blocks_two_at_a_time_and_one_left_replay_exactly():
    config = dict(n_layer=1, n_embd=32, n_head=4, block_size=20)
    replay, compiled = trainer("replay", docs=LONG, **config), trainer("compiled", docs=LONG, **config)
    assert losses_and_weights(replay, 4) == losses_and_weights(compiled, 4)
    runner = replay.document_loss
    assert runner.tape.n_pos == 20 and runner.tape.counts(runner.tape.n_pos)["matrix_panels"] > 0

"""A level's matrices over every position at once (panels.c): a unit of
sixteen rows (a run of four groups) in sixteen registers with AVX-512, a
unit of four rows (lm_head's rows past its runs) four by four; positions in
blocks of eight, the last block partly filled; with AVX-512 eight rows times
three blocks, or two, a block left over alone. Bit for bit the compiled
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


# The alphabet from each letter on, 35 long: block_size 20, 28 and 34 make three,
# four and five blocks of positions: three side by side; three and one alone
# (sixteen rows or four, four positions); three and two (two positions)
LONG = [("abcdefghijklmnopqrstuvwxyz" * 2)[k:k + 35] for k in range(26)]


@pytest.mark.parametrize("block_size", [20, 28, 34])
def test_blocks_three_or_two_at_a_time_and_one_left_replay_exactly(block_size):
    config = dict(n_layer=1, n_embd=32, n_head=4, block_size=block_size)
    replay, compiled = trainer("replay", docs=LONG, **config), trainer("compiled", docs=LONG, **config)
    assert losses_and_weights(replay, 3) == losses_and_weights(compiled, 3)
    runner = replay.document_loss
    assert runner.tape.n_pos == block_size and runner.tape.counts(block_size)["matrix_panels"] > 0

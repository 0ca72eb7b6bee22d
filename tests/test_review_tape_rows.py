"""The rows a recorded step's tape gives back (src/tape/build.c give_back_rows) and
the release after it keep the arena's promise about rows past its last node: an
exponent only where the op byte says OP_POW or OP_CUSTOM (src/arena.h), since a
drop, a reclaim or a release clears only those rows' exponents, reading op bytes.

The build hands the rows' pages back to the system column by column, each rounded
to whole pages: a page of op bytes (4096 rows) and one of exponents (512 rows) do not
start at the same row, so op bytes can read 0 (given back) where exponents stay. A
power with the exponent 0 (which writes none) appended there then read the old one:
Value(3) ** 0 came out the float 1.0, not the int 1, and a replay of it would raise
3 to the old power. Where the pages fall depends on the allocator: the recordings
start at many rows, and their columns lie at several sizes.
"""
import gc

import pytest
from support import small_trainer

from microgpt import available_engines

if "replay" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

_engine = pytest.importorskip("microgpt._engine")


def test_powers_after_a_recorded_step_read_no_exponent_of_its_rows():
    arena = _engine.default_arena()
    stale = []
    for shift in range(0, 4096, 64):  # the recording starts `shift` rows further on
        gc.collect()
        pad = [_engine.Value(0.0) for _ in range(shift)]
        trainer = small_trainer("replay")
        trainer.train_step()  # recorded, its tape built (its rows given back), its graph released
        x = _engine.Value(3)
        made = [x ** 0 for _ in range(3000)]  # in the recording's rows
        exponents = arena.column("operand")
        stale += [(shift, m.node, exponents[m.node]) for m in made
                  if exponents[m.node] != 0.0 or type(m.data) is not int]
        assert made[0].data == 1 and made[0]._local_grads == (0.0,)
        del made, x, trainer, pad
    assert stale == []

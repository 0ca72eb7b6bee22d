"""Runs of backward entries whose gradient is one parent's product (a number
read once: most of the elementwise work), taken in one loop (singles.c):
bit for bit as the compiled engine computes, over documents of every length
(a parent past the document's last position adds nothing), with the runs cut
where a side-by-side group's top or a level of the backward begins."""
import pytest

from microgpt import available_engines
from test_tape import replayed_as_compiled
from test_wide_kernels import DOCS

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")


@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=16, n_head=2, block_size=9),
                                    dict(n_layer=2, n_embd=20, n_head=4, block_size=16)])
def test_runs_of_single_pull_lists_replay_bit_for_bit(config):
    replay = replayed_as_compiled(6, docs=DOCS, **config)
    assert replay.document_loss.model_steps == 0, "every step after the recording was replayed"
    tape = replay.document_loss.tape
    for n in (1, 2, tape.n_pos):
        c = tape.counts(n)
        assert c["pulls_single_runs"] > 0, "the runs apply"
        # never an entry of a side-by-side group (nor one with a longer list)
        assert c["pulls_single_runs"] <= c["pulls"] - c["pulls_side_by_side"]
    assert tape.counts(1)["pulls_single_runs"] < tape.counts(tape.n_pos)["pulls_single_runs"]


@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=16, n_head=2, block_size=9),
                                    dict(n_layer=2, n_embd=20, n_head=4, block_size=16)])
def test_chained_single_entries_take_the_last_gradient_from_a_register(config):
    """A softmax's sum is a chain of adds, each read once by the next (local
    gradient 1.0), and an attention logit's dot is read once by its scaling:
    single_grads keeps the last entry's gradient in a register for the next,
    skipping 0.0 + 1.0 * g (g itself). Bit for bit as the compiled engine,
    weights and losses over several steps."""
    replay = replayed_as_compiled(6, docs=DOCS, **config)
    tape = replay.document_loss.tape
    for n in (1, tape.n_pos):
        c = tape.counts(n)
        assert 0 < c["pulls_single_chained"] < c["pulls_single_runs"], "chains are taken, and entries that are not"

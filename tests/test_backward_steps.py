"""The backward's dispatch made at build time (steps.c): one record a step (a
group, a run, or an entry alone), stored in the order the backward runs its
pieces, and lists whose parents and sources step by constants (a norm's
scale, read by each entry of its vector) summed without their indices. Bit for
bit as the compiled engine, over documents of every length (a replay of fewer
positions runs only its positions' pieces; a parent past the last position
adds nothing)."""
import pytest

from microgpt import available_engines
from test_tape import every_length_replays_exactly

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")


@pytest.mark.parametrize("config", [dict(n_layer=1, n_embd=16, n_head=2, block_size=10),
                                    dict(n_layer=2, n_embd=16, n_head=4, block_size=10)])
def test_backward_steps_and_stepped_lists_replay_bit_for_bit(config):
    replay = every_length_replays_exactly("abcdefghij", 5, **config)
    tape = replay.document_loss.tape
    last = None
    for n in range(1, tape.n_pos + 1):
        c = tape.counts(n)
        # fewer steps than entries (a group is one step), a step at least an entry's
        assert 0 < c["backward_steps"] < c["backward"]
        # a norm's scale over its vector's n_embd entries, at least once a position
        assert c["pulls_stepped"] >= n * config["n_embd"]
        assert c["pulls_stepped"] <= c["pulls"]
        if last is not None:  # a replay of more positions runs more of them
            assert c["backward_steps"] > last["backward_steps"] and c["pulls_stepped"] > last["pulls_stepped"]
        last = c

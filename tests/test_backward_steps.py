"""The backward's dispatch made at build time (steps.c): one record a step (a
group, a run, or an entry alone), stored in the order the backward runs its
pieces, and lists whose parents and sources step by constants (a norm's
scale, read by each entry of its vector) summed without their indices. Bit for
bit as the compiled engine, over documents of every length (a replay of fewer
positions runs only its positions' pieces; a parent past the last position
adds nothing)."""
import pytest

from microgpt import available_engines
from test_tape import every_length_replays_exactly, replayed_as_compiled

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


def test_a_backward_whose_entry_arrays_span_huge_pages_replays_exactly():
    # at 4/64/64 the arrays the backward reads by entry (4 bytes an entry and up) are
    # past a huge page (2 MiB), so the build moves them to memory of their own that
    # starts on one (steps.c); a document shorter than the recorded one runs the
    # pieces of its positions only, from the moved arrays
    import random
    docs = ["".join(random.Random(k).choice("abcdefghijklmnop") for _ in range(n)) for k, n in ((0, 40), (1, 23))]
    replay = replayed_as_compiled(2, docs=docs, n_layer=4, n_embd=64, block_size=64)
    tape = replay.document_loss.tape
    assert tape.counts(tape.n_pos)["backward"] * 4 >= 2 << 20

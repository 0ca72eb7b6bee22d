"""The parameters' numbers a replayed forward reads (src/tape/params.c): where
the panels run a level's matrices, each unit copies its own rows from the
arena as the forward reaches it, the parameters outside the units copied
first. Whatever a user writes into p.data between steps, the next replayed
step reads it, bit for bit the compiled engine's; and a forward that fails
partway through its levels runs again in order on every parameter's number."""
import pytest

from microgpt import available_engines, model
from test_tape import losses_and_weights, state, trainer
from test_tape_vectors import softmax_unshifted

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

DOCS = [("abcdefghijklmnopqrstuvwxyz" * 2)[k:k + 21] for k in range(26)]
CONFIG = dict(n_layer=2, n_embd=32, n_head=4, block_size=20)


def panels_and_one_block(t):
    counts = t.document_loss.tape.counts(t.document_loss.tape.n_pos)
    return counts["matrix_panels"] > 0 and counts["params_in_one_block"]


def written_between_steps(t):
    """Numbers written into parameters of every kind: a unit's rows (layer 1's
    first matrix, lm_head), the position table (outside every unit), the token
    table's row of "a"."""
    sd = t.sd
    first_matrix = next(name for name in sd if name.startswith("layer1."))
    for j, p in enumerate(sd[first_matrix][3]):
        p.data = 0.25 - 0.01 * j
    for p in sd["lm_head"][0]:
        p.data = -0.5
    for p in sd["wpe"][2]:
        p.data = 0.125
    for p in sd["wte"][1]:
        p.data = -0.0625


def test_data_written_between_replayed_steps_is_what_the_next_step_reads():
    runs = []
    for name in ("replay", "compiled"):
        t = trainer(name, docs=DOCS, **CONFIG)
        first = losses_and_weights(t, 3)
        written_between_steps(t)
        runs.append((first, losses_and_weights(t, 3)))
        if name == "replay":
            assert panels_and_one_block(t) and t.document_loss.model_steps == 0
    assert runs[0] == runs[1]


def test_a_forward_failing_at_its_first_levels_runs_again_on_the_new_numbers(monkeypatch):
    # a softmax without its max subtracted: an attention logit made large overflows an
    # exp at layer 0's attention, levels before lm_head's; the forward by levels stops
    # there, and the one in order runs again from position 0 on every parameter's number
    # (lm_head's rows too, which no unit had copied yet). The operation that failed fails
    # again in order on the same numbers, and the model code then takes the step: what it
    # raises, and the weights it leaves, are the compiled engine's
    monkeypatch.setattr(model, "softmax", softmax_unshifted)
    outcomes = []
    for name in ("replay", "compiled"):
        t = trainer(name, docs=DOCS, **CONFIG)
        losses = losses_and_weights(t, 3)
        if name == "replay":
            assert panels_and_one_block(t) and t.document_loss.model_steps == 0
        written_between_steps(t)
        for row in t.sd["layer0.attn_wq"] + t.sd["layer0.attn_wk"]:
            for p in row:
                p.data = 4.0
        with pytest.raises(OverflowError) as raised:
            t.train_step()
        outcomes.append((losses, str(raised.value), state(t)))
    assert outcomes[0] == outcomes[1]

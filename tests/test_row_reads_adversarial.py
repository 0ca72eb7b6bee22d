"""Matrix products written other ways than model.linear's (rows read in another
order, a vector read reversed or shifted by some rows, the weights as the
vector, a row of one weight, rows of a vector's repeated entry, products
between the rows): the recording either replays them bit for bit as the
compiled engine computes or is refused and made again node by node; never a
different loss, weight or sample. Likewise weights handed over in another order
than they were made, or tied."""
import random

import pytest

from microgpt import available_engines, model
from microgpt.sampling import sample
from support import small_trainer
from test_tape import losses_and_weights, trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

DOCS = ["abcdefghij"[:k] for k in range(1, 11)] + ["jihgfedcba", "aaaa", "b"]
dot = model.dot

def flat(w):
    return [p for row in w for p in row]


def shifted_row(w, r):
    """Row r of w's weights one on: each row starts at the next row's second
    weight (consecutive parameters, not a row of w); the last wraps to the first."""
    f, n = flat(w), len(w[0])
    return f[1 + r * n:1 + r * n + n] if r < len(w) - 1 else f[1 + r * n:] + f[:1]


LINEARS = {
    "rows_last_first": lambda x, w: [dot(wo, x) for wo in w[::-1]][::-1],
    "odd_rows_read_reversed": lambda x, w: [dot(wo, x if r % 2 == 0 else x[::-1]) for r, wo in enumerate(w)],
    "one_row_shifted": lambda x, w: [dot(wo, x[1:] + x[:1] if r == 2 else x) for r, wo in enumerate(w)],
    "weights_as_the_vector": lambda x, w: [dot(x, wo) for wo in w],
    "rows_one_short": lambda x, w: [dot(wo[:-1] if r % 3 == 1 else wo, x) for r, wo in enumerate(w)],
    "rows_from_the_second_weight": lambda x, w: [dot(wo[1:], x[1:]) + wo[0] * x[0] for wo in w],
    "one_entry_repeated": lambda x, w: [dot(wo, [x[r % len(x)]] * len(x)) for r, wo in enumerate(w)],
    "products_between_rows": lambda x, w: [dot(wo, x) * 1.0 for wo in w],
    "each_row_twice": lambda x, w: [dot(wo, x) + dot(wo, x) for wo in w],
    "row_of_one": lambda x, w: [sum((dot(wo[j:j + 1], x[j:j + 1]) for j in range(len(x))), 0) for wo in w],
    "an_entry_read_between_rows": lambda x, w: [dot(wo, x) + x[r % len(x)] * 0.5 for r, wo in enumerate(w)],
    "odd_rows_read_a_copy": lambda x, w: [dot(wo, x if r % 2 == 0 else [xi * 1.0 for xi in x]) for r, wo in enumerate(w)],
    "first_entry_twice": lambda x, w: [dot(wo, x[:1] + x[:-1]) for wo in w],
    "last_row_reads_first": lambda x, w: [dot(w[-1], x)] and [dot(wo, x) for wo in w],
    "all_rows_one_short": lambda x, w: [dot(wo[:-1], x[:-1]) for wo in w],
    "overlapping_windows": lambda x, w: [dot(flat(w)[r:r + len(x)], x) for r in range(len(w))],
    "windows_one_apart": lambda x, w: [dot(flat(w)[r * (len(x) - 1):r * (len(x) - 1) + len(x)], x) for r in range(len(w))],
    "even_rows_read_halves": lambda x, w: [dot(w[r - r % 2][:len(x) // 2], x[len(x) // 2:]) for r in range(len(w))],
    "rows_shifted_one_weight": lambda x, w: [dot(shifted_row(w, r), x) for r in range(len(w))],
    "x_times_itself": lambda x, w: [dot(wo, x) + dot(x, x) * 0.001 for wo in w],
}


def samples(t):
    random.seed(5)
    return [sample(t.engine, t.sd, t.config, t.tokenizer, temperature=temp, prefix=pre)
            for temp in (0.6, 1.4) for pre in ("", "ab")]


@pytest.mark.parametrize("name", sorted(LINEARS))
@pytest.mark.parametrize("config", [dict(n_embd=8, n_head=2, block_size=9), dict(n_embd=16, n_head=1, block_size=17),
                                    dict(n_embd=32, n_head=2, block_size=3)])
def test_a_matrix_product_written_otherwise_replays_or_is_refused_exactly(monkeypatch, name, config):
    monkeypatch.setattr(model, "linear", LINEARS[name])
    replay, compiled = trainer("replay", docs=DOCS, **config), trainer("compiled", docs=DOCS, **config)
    assert losses_and_weights(replay, 6) == losses_and_weights(compiled, 6)
    assert samples(replay) == samples(compiled)


def tie(sd, name, other):
    sd[name] = sd[other]


STATE_DICTS = {  # the weights as a user may hand them over: rows of consecutive leaves that are
    # not the optimizer's parameters in order, or a weight listed twice
    "keys_last_first": lambda sd: dict(reversed(list(sd.items()))),
    "rows_last_first": lambda sd: {k: m[::-1] for k, m in sd.items()},
    "ends_of_rows_swapped": lambda sd: {k: [r[-1:] + r[1:-1] + r[:1] for r in m] for k, m in sd.items()},
    "lm_head_tied_to_wte": lambda sd: tie(sd, "lm_head", "wte") or sd,
    "wk_is_wq": lambda sd: tie(sd, "layer0.attn_wk", "layer0.attn_wq") or sd,
    "a_row_listed_twice": lambda sd: sd["lm_head"].__setitem__(1, sd["lm_head"][0]) or sd,
}


def handed_over(engine, name):
    """A trainer whose weights reach it as STATE_DICTS[name] hands them over."""
    return small_trainer(engine, DOCS, seed=7, num_steps=100, state=STATE_DICTS[name], block_size=9)


@pytest.mark.parametrize("name", sorted(STATE_DICTS))
def test_weights_handed_over_in_another_order_or_tied_replay_or_are_refused_exactly(name):
    runs = []
    for engine in ("replay", "compiled"):
        t = handed_over(engine, name)
        runs.append((losses_and_weights(t, 6), samples(t)))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ["lm_head_tied_to_wte", "wk_is_wq", "a_row_listed_twice"])
def test_a_weight_listed_twice_is_refused_with_that_reason(name):
    t = handed_over("replay", name)
    losses_and_weights(t, 1)
    assert t.document_loss.refused.startswith("a parameter is listed twice")

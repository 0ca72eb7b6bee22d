"""The backward order's check against walks for other targets.

A recording is replayed for every target, so the build checks the tape's rule
(a node every logit reads adds the logits' terms highest first, the target's
last) against real depth-first walks with the targets changed, not only
against the walk of the targets recorded. Here a softmax sums its exps in
order but for the target's and a neighbour's, swapped: the recorded walk meets
the logits as the rule says (the target's first, the rest in order), a walk
for any other target meets the two swapped ones out of order, and the step is
refused (the model code runs it, with the compiled engine's floats).
"""
import pytest

from microgpt import available_engines
from microgpt import model
from microgpt.data import Tokenizer

from support import bits, small_trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

# every document the same: position p's target is known; more characters than
# the block's positions, so that only the vocabulary's softmax has that many logits
DOCS = ["abcdefghi"] * 4


def softmax_suiting_the_targets(targets, vocab_size, swap=True):
    positions = {"T": 0}  # an attention softmax at position p has p + 1 logits, made before the vocabulary's

    def softmax(logits):
        if len(logits) != vocab_size or not swap:
            positions["T"] = len(logits)
            order = range(len(logits))
        else:
            t = targets[positions["T"] - 1]
            u = t + 1 if t + 1 < vocab_size else t - 1
            order = list(range(vocab_size))
            order[t], order[u] = u, t
        max_val = model.max_data(logits)
        exps = [(val - max_val).exp() for val in logits]
        total = sum(exps[i] for i in order)
        return [e / total for e in exps]
    return softmax


def train(engine, steps=3):
    t = small_trainer(engine, docs=DOCS)
    losses = [bits(t.train_step()[1]) for _ in range(steps)]
    return losses, [bits(p.data) for p in t.params], t


def test_a_softmax_that_suits_only_the_recorded_targets_is_refused_by_the_walks_for_other_targets(monkeypatch):
    tok = Tokenizer.from_documents(DOCS)
    # a recording repeats the document's tokens to fill its positions (replay.record)
    targets = (tok.document_tokens(DOCS[0]) * 8)[1:]
    assert tok.vocab_size == 10 > small_trainer("replay", docs=DOCS).config.block_size
    monkeypatch.setattr(model, "softmax", softmax_suiting_the_targets(targets, tok.vocab_size))
    losses, weights, t = train("replay")
    assert (losses, weights) == train("compiled")[:2]
    assert t.document_loss.tape is None
    assert t.document_loss.refused == "the backward order for another target does not follow the tape's rule"


def test_the_same_softmax_with_nothing_swapped_is_replayed(monkeypatch):
    tok = Tokenizer.from_documents(DOCS)
    monkeypatch.setattr(model, "softmax", softmax_suiting_the_targets([], tok.vocab_size, swap=False))
    losses, weights, t = train("replay")
    assert (losses, weights) == train("compiled")[:2]
    assert t.document_loss.refused is None and t.document_loss.tape is not None

"""The contract between the model code and the replay's recorder.

What the recorder recognises is written beside the code it recognises
(model.py's sums, softmax and mean_of). Written otherwise, the code
still gives the compiled engine's floats: a shape it no longer recognises is
replayed unfused (slower), and a mean it cannot follow is refused, which
`microgpt train` says in one line.
"""
import pytest

from microgpt import available_engines, get_engine
from microgpt import model

from support import TEN_NAMES, run_main, train_bits

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")


def a_mean_from_the_first_loss(losses):
    return (1 / len(losses)) * sum(losses[1:], losses[0])


def test_the_mean_as_written_is_recognised():
    losses, weights, t = train_bits("replay")
    assert (losses, weights) == train_bits("compiled")[:2]
    assert t.document_loss.refused is None and t.document_loss.model_steps == 0


def test_a_mean_written_from_the_first_loss_is_refused_and_computed_exactly(monkeypatch):
    monkeypatch.setattr(model, "mean_of", a_mean_from_the_first_loss)
    losses, weights, t = train_bits("replay")
    assert (losses, weights) == train_bits("compiled")[:2]
    assert t.document_loss.tape is None
    assert t.document_loss.refused == "the loss is not the mean of the positions' losses"
    assert t.document_loss.model_steps == 6


def test_train_says_in_one_line_that_a_refused_recording_runs_the_model_code(monkeypatch, tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("\n".join(TEN_NAMES) + "\n", encoding="utf-8")
    argv = ["train", "--input", text, "--steps", "3", "--num-samples", "0", "--engine", "replay", "--n-embd", "8"]
    status, out, err = run_main(argv)
    assert status == 0, err
    assert "model code runs every step" not in out + err
    monkeypatch.setattr(model, "mean_of", a_mean_from_the_first_loss)
    status, out, err = run_main(argv)
    assert status == 0, err
    notes = [line for line in out.splitlines() if "model code runs every step" in line]
    assert notes == ["microgpt: note: the model code runs every step (the step cannot be replayed: "
                     "the loss is not the mean of the positions' losses)"]
    assert len([line for line in out.splitlines() if line.startswith("step ")]) == 3


def test_a_sum_written_another_way_replays_unfused_and_exactly(monkeypatch):
    # the same products, summed from the first one rather than from Value(0): not the
    # chain the recorder fuses, so each addition is its own instruction, with the same floats
    fused = train_bits("replay")[2].document_loss.tape.counts(8)

    def linear_from_the_first_product(x, w):
        rows = []
        for wo in w:
            products = [wi * xi for wi, xi in zip(wo, x)]
            rows.append(sum(products[1:], products[0]))
        return rows

    monkeypatch.setattr(model, "linear", linear_from_the_first_product)
    losses, weights, t = train_bits("replay")
    assert (losses, weights) == train_bits("compiled")[:2]
    assert t.document_loss.refused is None and t.document_loss.model_steps == 0
    unfused = t.document_loss.tape.counts(8)
    assert unfused["forward"] > 2 * fused["forward"]
    assert unfused["kept_nodes"] > 2 * fused["kept_nodes"]


@pytest.mark.parametrize("name", ["pure", "compiled"])
def test_dot_makes_the_nodes_the_plain_sum_makes(name):
    # the compiled engine's Value.dot appends what sum(wi * xi ...) appends, node for
    # node: values, ops, children, local grads, int tags and gradients; an empty sum is 0
    eng = get_engine(name)
    w = [eng.Value(1.5), eng.Value(2), eng.Value(-0.25)]
    x = [eng.Value(3), eng.Value(4), eng.Value(0.5)]
    with eng.graph():
        fast, plain = model.dot(w, x), sum(wi * xi for wi, xi in zip(w, x))

        def shape(v, seen):
            if id(v) in seen:
                return ("seen",)
            seen.add(id(v))
            kids = tuple(shape(c, seen) for c in v._children)
            return (repr(v), getattr(v, "op", None), tuple(map(repr, v._local_grads)), kids)

        assert shape(fast, set()) == shape(plain, set())
        fast.backward()
        fast_grads = [repr(v) for v in w + x]
        for v in w + x:
            v.grad = 0
        plain.backward()
        assert fast_grads == [repr(v) for v in w + x]
    assert model.dot([], []) == 0


def test_a_softmax_summed_backwards_is_refused_by_the_backward_order_check(monkeypatch):
    # the recorder's rule for a node every logit reads: its gradient adds the logits'
    # terms highest first, the target's last, as the reference's depth-first walk
    # does when the total sums the exps in order. Summed in reverse, the walk meets
    # the logits in the other order: the build's walk sees it, and the step is refused
    def softmax_summed_backwards(logits):
        max_val = model.max_data(logits)
        exps = [(val - max_val).exp() for val in logits]
        total = sum(reversed(exps))
        return [e / total for e in exps]

    monkeypatch.setattr(model, "softmax", softmax_summed_backwards)
    losses, weights, t = train_bits("replay", steps=3)
    assert (losses, weights) == train_bits("compiled", steps=3)[:2]
    assert t.document_loss.tape is None
    assert "does not follow the tape's rule" in t.document_loss.refused

"""A step recorded compactly: model.dot's sums as one node over their operands.

While the replay records a step, Value.dot appends each sum of float products as
the constant 0 and one OP_DOT node (src/arena.h arena_push_dot) instead of its
2 n + 1 nodes; the tape's builder takes the chain whole. The value is the plain
sum's, bit for bit; the tape is the one the node-by-node recording gives; the
arena refuses to run backward through such a node; a compact recording that is
refused is made again node by node.
"""
import math
import random

import pytest

from microgpt import available_engines, get_engine, model, replay, train
from microgpt.model import Config, init_state_dict

from support import TEN_NAMES, bits, small_trainer, train_bits

if "replay" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

from microgpt import _engine  # noqa: E402  (built: the replay engine is)

OP_DOT = 9


def compact_sum(arena, w, x):
    """model.dot(w, x) made while arena records compactly: (value, nodes appended, ops)."""
    start = len(arena)
    _engine.begin_recording(arena, True)
    try:
        s = model.dot(w, x)
    finally:
        _engine.end_recording(arena)
    return s, len(arena) - start, list(arena.column("op")[start:])


def test_a_compact_sum_is_the_plain_sums_value_in_two_nodes():
    arena = _engine.Arena()
    rng = random.Random(5)
    # negative zeros (the first product's + 0 makes it +0.0), an int times a float
    # (relu's int 0), and terms whose sum depends on its order (1e16 + r - 1e16)
    w = [arena.value(v) for v in [-0.0, 1.5, -2.25, 1e8, 0, rng.uniform(-1, 1), -1e8, 3]]
    x = [arena.value(v) for v in [2.0, -0.0, 0, 1e8, -1.5, rng.uniform(-1, 1), 1e8, 0.1]]
    for n in range(1, len(w) + 1):
        with arena.graph():
            plain = sum(wi * xi for wi, xi in zip(w[:n], x[:n]))
            s, made, ops = compact_sum(arena, w[:n], x[:n])
            assert bits(s.data) == bits(plain.data)
            assert made == 2 and ops == [1, OP_DOT]  # the constant 0, then the sum
            assert s.op == "dot" and s._children == tuple(v for pair in zip(w[:n], x[:n]) for v in pair)
            assert s._local_grads == tuple(v.data for pair in zip(x[:n], w[:n]) for v in pair)


def test_a_product_of_two_ints_takes_the_node_by_node_path():
    arena = _engine.Arena()
    w, x = [arena.value(2), arena.value(0.5)], [arena.value(3), arena.value(4)]
    with arena.graph():
        s, made, ops = compact_sum(arena, w, x)
        assert made == 2 * 2 + 1 and OP_DOT not in ops
        assert s.data == 8.0


def test_the_arena_runs_no_backward_and_no_replay_through_a_compact_sum():
    arena = _engine.Arena()
    w, x = [arena.value(0.5), arena.value(1.5)], [arena.value(2.0), arena.value(-1.0)]
    p = arena.value(3.0)
    with arena.graph():
        mark = len(arena)
        s, _, _ = compact_sum(arena, w, x)
        loss = s + p * 2.0  # the walk reaches p's product before the compact sum
        with pytest.raises(RuntimeError, match="compact"):
            loss.backward()
        assert (p.grad, loss.grad, w[0].grad) == (0, 0, 0)  # refused before any gradient is written
        with pytest.raises(ValueError, match="compact"):
            arena.replay(mark)


def test_the_compact_recording_builds_the_node_by_node_recordings_tape():
    t = small_trainer("replay")
    dl = t.document_loss
    tokens = t.tokenizer.document_tokens(TEN_NAMES[3])
    eng = get_engine("replay")
    counts = []
    for compact in (True, False):
        with eng.graph():
            tape, why = replay.record_once(dl.sd, dl.config, dl.params, dl.table, tokens[:9], None, False,
                                           compact)
            assert why is None
            counts.append({k: v for k, v in tape.counts(8).items() if k != "nodes"})
            counts[-1]["loss"] = bits(tape.forward(tokens[:9]))
    assert counts[0] == counts[1]
    assert counts[0]["forward_side_by_side"] > 0  # the attention's chains, four at once, either way


@pytest.mark.parametrize("compact", [True, False])
def test_a_tape_built_on_its_own_copy_of_the_edges_is_the_one_built_in_place(monkeypatch, compact):
    # consume=True: the chains' lists are the arena's edges and the room past them
    # (rmsnorm's sums, recorded node by node, written there), the recorded rows'
    # pages given back; consume=False: the tape's own copy, grown for those lists
    t = small_trainer("replay")
    dl = t.document_loss
    tokens = t.tokenizer.document_tokens(TEN_NAMES[3])[:9]
    eng = get_engine("replay")
    build = _engine.build_tape
    tapes = []
    for consume in (True, False):
        monkeypatch.setattr(_engine, "build_tape", lambda *a, **k: build(*a, **{**k, "consume": consume}))
        with eng.graph():
            tape, why = replay.record_once(dl.sd, dl.config, dl.params, dl.table, tokens, None, False, compact)
        assert why is None
        loss = bits(tape.forward(tokens))
        tape.backward()
        grads = [bits(p.grad) for p in dl.params]
        for p in dl.params:
            p.grad = 0
        tapes.append((tape.counts(8), loss, grads, tape.nbytes))
    assert tapes[0] == tapes[1]


def recordings(monkeypatch, refuse_compact=False):
    """Log each recording replay makes as (compact, why it was refused or None)."""
    made = []
    build = replay.build_recording

    def logged(*args):
        tape, why = (None, "refused for the test") if refuse_compact and args[-1] else build(*args)
        made.append((args[-1], why))
        return tape, why

    monkeypatch.setattr(replay, "build_recording", logged)
    return made


def replayed_as_compiled(monkeypatch, refuse_compact=False):
    """The recordings replay made ((compact, why refused) each) and its document loss;
    its losses and weights over the run are the compiled engine's."""
    made = recordings(monkeypatch, refuse_compact)
    losses, weights, t = train_bits("replay")
    assert (losses, weights) == train_bits("compiled")[:2]
    return made, t.document_loss


def assert_refused_both_ways(monkeypatch, why):
    """Refused compact, then node by node, for why: the model code ran every step."""
    made, loss = replayed_as_compiled(monkeypatch)
    assert made == [(True, why), (False, why)]
    assert loss.refused == why and loss.model_steps == 6


def test_the_model_codes_recording_is_compact(monkeypatch):
    made, _ = replayed_as_compiled(monkeypatch)
    assert made == [(True, None)]


def test_a_sum_reading_a_node_in_two_products_replays_exactly(monkeypatch):
    # x[0] read by the first and the last product of every row: two terms of one
    # compact node for one child, each with its own place in the backward's order
    def linear_reading_the_first_twice(x, w):
        return [model.dot(wo, x[:-1] + [x[0]]) for wo in w]

    monkeypatch.setattr(model, "linear", linear_reading_the_first_twice)
    made, loss = replayed_as_compiled(monkeypatch)
    assert made == [(True, None)]
    assert loss.refused is None and loss.model_steps == 0


def test_a_refused_compact_recording_is_made_again_node_by_node(monkeypatch):
    made, loss = replayed_as_compiled(monkeypatch, refuse_compact=True)
    assert made == [(True, "refused for the test"), (False, None)]
    assert loss.refused is None and loss.model_steps == 0


def test_a_recording_refused_by_the_builds_last_check_is_computed_exactly(monkeypatch):
    # probs[target] read through a product: refused by the last check of the tape's
    # packing, once the chains' lists are the arena's edges (compact) or written past
    # them (node by node) and the recorded rows' pages given back; the build's cleanup
    # leaves the arena to the model code, which computes every step
    def loss_reading_the_target_through_a_product(sd, config, tokens, observe=None, temperature=None,
                                                  watch=None):
        read = model.reader(sd, config, temperature, watch)
        losses = []
        for pos_id in range(min(config.block_size, len(tokens) - 1)):
            logits, probs = read(tokens[pos_id], pos_id)
            losses.append(-(probs[tokens[pos_id + 1]] * 1.0).log())
            if observe is not None:
                observe(logits, probs, losses[-1])
        return model.mean_of(losses)

    monkeypatch.setattr(replay, "document_loss", loss_reading_the_target_through_a_product)
    monkeypatch.setattr(train, "document_loss", loss_reading_the_target_through_a_product)
    assert_refused_both_ways(monkeypatch, "probs[target] is read by a product")


def test_a_compact_recording_leaves_no_nodes_behind():
    t = small_trainer("replay")
    arena = t.params[0].arena
    eng = get_engine("replay")
    with eng.graph():
        before = len(arena)
        t.document_loss(t.tokenizer.document_tokens(TEN_NAMES[0]))
        assert len(arena) == before  # the recording's graph released once its tape was built
    assert not math.isnan(t.document_loss.tape.forward(t.tokenizer.document_tokens(TEN_NAMES[0])[:3]))


def test_a_sum_reading_a_weight_twice_is_refused_both_ways_and_computed_exactly(monkeypatch):
    # a weight read by two products of one position: its gradient's two terms are
    # not one row's (refused compact, then node by node, for the same reason)
    def linear_reading_a_weight_twice(x, w):
        return [model.dot(wo + [wo[0]], x + [x[-1]]) for wo in w]

    monkeypatch.setattr(model, "linear", linear_reading_a_weight_twice)
    assert_refused_both_ways(monkeypatch, "a parameter is read twice at one position")


def test_a_samplers_model_code_sums_compactly_with_the_same_probabilities():
    t = small_trainer("replay")
    sd, config = t.document_loss.sd, t.document_loss.config
    arena = t.params[0].arena
    eng = get_engine("replay")
    sampler = replay.Sampler(sd, config)
    with eng.graph():
        mark = len(arena)
        compact_step = sampler.model_document(0.5)
        compact = [compact_step(tok, pos) for pos, tok in enumerate([0, 3, 5])]
        assert OP_DOT in arena.column("op")[mark:]
    with eng.graph():
        plain_step = model.ModelSampler(sd, config).document(0.5)
        plain = [plain_step(tok, pos) for pos, tok in enumerate([0, 3, 5])]
    assert [list(map(bits, p)) for p in compact] == [list(map(bits, p)) for p in plain]
    with eng.graph():  # the setting is the position's only
        mark = len(arena)
        model.ModelSampler(sd, config).document(0.5)(0, 0)
        assert OP_DOT not in arena.column("op")[mark:]


def test_a_recording_sets_its_own_way_of_appending_sums():
    arena = _engine.Arena()
    _engine.begin_recording(arena, True)
    try:
        with pytest.raises(RuntimeError, match="its own way"):
            _engine.set_compact(arena, False)
    finally:
        _engine.end_recording(arena)
    assert _engine.set_compact(arena, True) is False and _engine.set_compact(arena, False) is True


def test_the_bench_counts_a_compactly_built_graph_as_the_node_by_node_one():
    from microgpt.bench.measure import compact_graph
    eng = get_engine("compiled")
    random.seed(4)
    cfg = Config(vocab_size=27, n_layer=2, n_embd=12, block_size=8, n_head=3)
    sd = init_state_dict(eng.Value, cfg)
    tokens = [random.randrange(27) for _ in range(10)]
    arena = eng.default_arena()
    for _ in range(2):  # the second time the arena has room: no reclaim in the middle of the count
        with eng.graph():
            n0, e0, r0 = len(arena), arena.num_edges, arena.reclaimed
            model.document_loss(sd, cfg, tokens)
            full = (len(arena) - n0, arena.num_edges - e0)
    assert arena.reclaimed == r0
    assert compact_graph(eng, lambda: model.document_loss(sd, cfg, tokens)) == full
    assert not _engine.set_compact(arena, False)  # the arena's own setting is back

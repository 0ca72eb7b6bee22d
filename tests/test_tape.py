"""The replay engine: a recorded step replayed in C gives the model code's floats.

Every comparison is with the compiled engine's per-operation path (itself
tested against pure), bit for bit: losses, every parameter's gradient, and the
weights after Adam. And every guard: what a recording cannot follow runs the
model code, which computes (or raises) as the reference does.
"""
import math
import random
import struct

import pytest

from microgpt import available_engines, get_engine
from microgpt import model
from microgpt.data import Tokenizer
from microgpt.model import Config, init_state_dict, parameters
from microgpt.train import Trainer

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn",
        "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila", "aria", "scarlett",
        "victoria", "madison", "luna", "grace", "chloe", "penelope", "layla", "riley", "zoey", "nora"]


def bits(x):
    return struct.pack("<d", x)


def trainer(name, docs=DOCS, seed=7, **config):
    eng = get_engine(name)
    random.seed(seed)
    tok = Tokenizer.from_documents(docs)
    cfg = Config(vocab_size=tok.vocab_size, **config)
    sd = init_state_dict(eng.Value, cfg)
    return Trainer(eng, sd, cfg, list(docs), tok, num_steps=100)


def state(t):
    return [bits(p.data) for p in t.params]


def losses_and_weights(t, steps):
    losses = [bits(t.train_step()[1]) for _ in range(steps)]
    return losses, state(t)


def replayed_as_compiled(steps, **kwargs):
    """A replay trainer and a compiled one made alike (trainer(**kwargs)): their losses
    and weights == over `steps` steps; the replay's trainer."""
    replay, compiled = trainer("replay", **kwargs), trainer("compiled", **kwargs)
    assert losses_and_weights(replay, steps) == losses_and_weights(compiled, steps)
    return replay


def every_length_replays_exactly(text, seed, **config):
    """Documents of every length up to len(text), twice each, shuffled: a replay of
    fewer positions than recorded stops at its last position. Replay's losses and
    weights == the compiled engine's, every step replayed; the replay's trainer."""
    docs = [text[:k] for k in range(1, len(text) + 1)] * 2
    random.Random(seed).shuffle(docs)
    replay = replayed_as_compiled(len(docs), docs=docs, **config)
    assert replay.document_loss.model_steps == 0
    return replay


@pytest.mark.parametrize("config", [dict(), dict(n_layer=2, n_embd=8, block_size=8, n_head=2)])
def test_replayed_training_equals_the_model_code(config):
    replay = replayed_as_compiled(40, **config)
    runner = replay.document_loss
    assert runner.refused is None and runner.tape is not None
    assert runner.model_steps == 0, "every step after a recording was replayed"
    # 16 positions (MIN_RECORDED) or the block if shorter: every later name fits
    assert runner.recordings == 1 and runner.tape.n_pos == min(16, replay.config.block_size)


def test_parameters_that_are_not_one_block_of_nodes():
    # a replay reads and writes parameters that are consecutive nodes as one
    # block; here a stray node sits between two matrices, so it takes them one by one
    compiled, replay = get_engine("compiled"), get_engine("replay")
    made = []

    def value_with_a_gap(eng):
        def make(x):
            if len(made) == 300:
                eng.Value(0.0)  # not a parameter, kept alive by the list
                made.append(None)
            v = eng.Value(x)
            made.append(v)
            return v
        return make

    def run(eng):
        made.clear()
        random.seed(7)
        tok = Tokenizer.from_documents(DOCS)
        cfg = Config(vocab_size=tok.vocab_size)
        sd = init_state_dict(value_with_a_gap(eng), cfg)
        t = Trainer(eng, sd, cfg, list(DOCS), tok, num_steps=100)
        return losses_and_weights(t, 12), t

    (want, _), (got, t) = run(compiled), run(replay)
    assert got == want
    assert t.document_loss.model_steps == 0
    assert not t.document_loss.tape.counts(1)["params_in_one_block"]
    assert trainer("replay").document_loss.tape is None  # (recorded at the first step)
    usual = trainer("replay")
    usual.train_step()
    assert usual.document_loss.tape.counts(1)["params_in_one_block"]


@pytest.mark.parametrize("name", ["compiled", "replay"])
def test_training_goes_on_right_after_the_parameters_move(name):
    # five dropped Values below the parameters: a reclaim slides every parameter
    # down five rows, onto rows that held parameters of the same epoch, so only
    # knowing that handles moved (not the epochs) tells the optimizer and the
    # tape to take their rows again
    def run(name, reclaim):
        eng = get_engine(name)
        below = [eng.Value(1.0) for _ in range(5)]  # rows below the parameters, dropped later
        arena = below[0].arena
        t = trainer(name)
        first = t.params[0].node
        losses = [bits(t.train_step()[1]) for _ in range(3)]
        del below[:]
        if reclaim:
            arena.reclaim()
            assert t.params[0].node < first, "the parameters moved"
        losses += [bits(t.train_step()[1]) for _ in range(5)]
        return losses, state(t)

    assert run(name, reclaim=True) == run("compiled", reclaim=False)


def test_a_replay_refuses_a_parameter_moved_to_another_arena():
    # Adam and the tape take their parameters' rows the same way (Rows)
    from microgpt import ArenaMismatchError
    from microgpt._engine import Arena
    t = trainer("replay")
    t.train_step()
    other = Arena()
    with other.graph():
        t.params[5].__init__(1.0, (other.value(0.0),), (1.0,))  # now a node of the other arena
        with pytest.raises(ArenaMismatchError):
            t.document_loss.tape.forward(t.tokens_at(1))


def samples_of(name, temperature, n=12, record_after=0, config=None, documents=None, positions=None, **kwargs):
    from microgpt.train import make_sampler, sample
    t = trainer(name, **(config or {}))
    for _ in range(15):
        t.train_step()
    sampler = make_sampler(t.engine, t.sd, t.config, documents, positions)
    if record_after is not None and hasattr(sampler, "record_after_blocks"):
        sampler.record_after_blocks = record_after  # (0: record at once)
    random.seed(5)
    return [sample(t.engine, t.sd, t.config, t.tokenizer, temperature, sampler=sampler, **kwargs)
            for _ in range(n)], sampler, t


@pytest.mark.parametrize("temperature, kwargs", [(0.5, {}), (1.0, dict(top_k=3)), (2, dict(prefix="em"))])
def test_replayed_sampling_draws_the_model_codes_names(temperature, kwargs):
    want, _, _ = samples_of("compiled", temperature, **kwargs)
    got, sampler, _ = samples_of("replay", temperature, **kwargs)
    assert got == want
    assert sampler.model_positions == 0, "every position was replayed"
    assert list(sampler.tapes) == [float(temperature)], "one recording for every sample"
    tape, _ = sampler.tapes[float(temperature)]
    with pytest.raises(RuntimeError, match="forward passes only"):
        tape.backward()


def test_a_sampler_records_once_the_model_code_has_sampled_a_few_blocks():
    # a recording costs about what 4 to 5 blocks of positions of the model code do
    want, _, _ = samples_of("compiled", 0.5, n=30)
    got, sampler, _ = samples_of("replay", 0.5, n=30, record_after=None)
    assert got == want
    tape = sampler.tapes[0.5][0]
    assert list(sampler.tapes) == [0.5] and tape is not None
    # four times the recording's length, before it was made (it may have grown since)
    assert sampler.before_recording[0.5] >= 4 * 8  # (8: MIN_SAMPLER_RECORDED)
    assert sampler.record_after(0.5) == 4 * tape.n_pos
    _, few, _ = samples_of("replay", 0.5, n=2, record_after=None)
    assert few.tapes == {}, "two names never pay for a recording"


def test_a_sampler_told_how_many_documents_records_once_they_would_cost_more():
    # 30 names, each about as long as the first: the model code draws the first
    # only (the sampler learns their length), then one recording serves the rest
    want, _, _ = samples_of("compiled", 0.5, n=30)
    got, sampler, _ = samples_of("replay", 0.5, n=30, record_after=None, documents=30)
    assert got == want
    assert sampler.before_recording[0.5] == len(want[0]) + 1  # (its end token's position too)
    assert sampler.tapes[0.5][0] is not None and sampler.model_positions == 0
    _, few, _ = samples_of("replay", 0.5, n=2, record_after=None, documents=2)
    assert few.tapes == {}, "two names never pay for a recording"


@pytest.mark.parametrize("positions", [8, 16, 2])  # (16: the block; 2: shorter than every name)
def test_a_sampler_told_how_long_documents_are_records_before_the_first(positions):
    # a guess decides when and how long the recording is, never which names
    want, _, _ = samples_of("compiled", 0.5, n=30)
    got, sampler, _ = samples_of("replay", 0.5, n=30, record_after=None, documents=30, positions=positions)
    assert got == want
    assert sampler.before_recording == {} and sampler.model_positions == 0
    assert sampler.tapes[0.5][0].n_pos >= min(positions, 8)


def test_typical_positions_is_the_median_document_with_its_end_at_most_the_block():
    from microgpt.sampling import typical_positions
    assert typical_positions(["ab", "abcd", "abcdefgh"], 16) == 5
    assert typical_positions(["abcdefgh"] * 3, 4) == 4
    assert typical_positions([], 16) is None


def test_a_sampled_document_longer_than_the_recording_records_again():
    # the sampler's first recording holds 8 positions (nothing longer sampled yet);
    # a 20-character prefix outgrows it: 32 positions, the document's so far computed again
    kwargs = dict(n=4, prefix="emmaolivia" * 2, config=dict(block_size=32))
    want, _, _ = samples_of("compiled", 0.5, **kwargs)
    got, sampler, _ = samples_of("replay", 0.5, **kwargs)
    assert got == want
    assert sampler.tapes[0.5][0].n_pos == 32 and sampler.model_positions == 0


def test_sampling_a_recording_cannot_serve_takes_the_model_code():
    # at a tiny temperature the recording's -log(probs[target]) meets a probability
    # of 0.0 and raises: no tape, and the model code draws the same names
    want, _, _ = samples_of("compiled", 1e-3)
    got, sampler, _ = samples_of("replay", 1e-3)
    assert got == want
    tape, why = sampler.tapes[1e-3]
    assert tape is None and "math domain error" in why


class FailsAt:
    """A tape whose forward fails at one position (as when an operation would raise)."""

    def __init__(self, tape, pos):
        self.tape, self.pos, self.n_pos = tape, pos, tape.n_pos

    def forward_from(self, tokens, start):
        return None if start == self.pos else self.tape.forward_from(tokens, start)

    def probs(self, p):
        return self.tape.probs(p)


def test_a_sampled_position_that_cannot_be_replayed_takes_the_model_code():
    # the model code then computes the document again from its first position
    # (its cache), and continues it: the same names
    from microgpt.train import sample
    want, _, _ = samples_of("compiled", 0.5)
    _, sampler, t = samples_of("replay", 0.5, n=1)  # (its recording is made at once)
    tape, _ = sampler.tapes[0.5]
    sampler.tapes[0.5] = (FailsAt(tape, 2), None)
    random.seed(5)
    got = [sample(t.engine, t.sd, t.config, t.tokenizer, 0.5, sampler=sampler) for _ in range(12)]
    assert got == want
    assert sampler.model_positions > 0


def grads_after_one_backward(t, tokens):
    with t.engine.graph():
        loss = t.document_loss(tokens)
        loss.backward()
        value = loss.data
    grads = [bits(p.grad) for p in t.params]
    for p in t.params:
        p.grad = 0
    return bits(value), grads


def test_every_length_and_target_gives_the_model_codes_gradients():
    replay, compiled = trainer("replay"), trainer("compiled")
    tok = replay.tokenizer
    longest = max(DOCS, key=len)
    grads_after_one_backward(replay, tok.document_tokens(longest))  # the recording
    assert replay.document_loss.tape.n_pos == replay.config.block_size
    rng = random.Random(3)
    for _ in range(25):  # random documents: every position's token and target vary
        n = rng.randint(1, len(longest))
        doc = "".join(rng.choice(tok.chars) for _ in range(n))
        tokens = tok.document_tokens(doc)
        assert grads_after_one_backward(replay, tokens) == grads_after_one_backward(compiled, tokens)
    assert replay.document_loss.recordings == 1 and replay.document_loss.model_steps == 0


def test_one_recording_serves_every_document_it_holds():
    t = trainer("replay", docs=["ab", "abcabc", "a"], block_size=8)
    t.train_step()  # a short document records the block (8: below MIN_RECORDED), its tokens repeated
    assert t.document_loss.tape.n_pos == 8
    for _ in range(5):
        t.train_step()
    assert t.document_loss.recordings == 1 and t.document_loss.model_steps == 0
    compiled = trainer("compiled", docs=["ab", "abcabc", "a"], block_size=8)
    for _ in range(6):
        compiled.train_step()
    assert state(t) == state(compiled)


def test_a_longer_document_records_again_twice_as_long():
    # the recording holds as many positions as the documents so far need, rounded
    # up to a power of two from 16: a block of 64 is recorded only when a document needs it
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    docs = ["ab", alphabet[:20], "a", (alphabet * 2)[:40], "abc", (alphabet * 3)[:70]]
    replay, compiled = trainer("replay", docs=docs, block_size=64), trainer("compiled", docs=docs, block_size=64)
    lengths = []
    for _ in range(len(docs)):
        replay.train_step()
        lengths.append(replay.document_loss.tape.n_pos)
    assert lengths == [16, 32, 32, 64, 64, 64]
    assert replay.document_loss.recordings == 3 and replay.document_loss.model_steps == 0
    for _ in range(len(docs)):
        compiled.train_step()
    assert state(replay) == state(compiled)


def test_validation_replays_forward_only_and_matches():
    replay, compiled = trainer("replay"), trainer("compiled")
    for t in (replay, compiled):
        t.train_step()
    assert bits(replay.validation_loss(DOCS[:10])) == bits(compiled.validation_loss(DOCS[:10]))
    assert all(p.grad == 0 for p in replay.params)  # forward only: no gradient was added


def test_an_undeclared_data_read_is_refused_and_the_model_code_runs(monkeypatch):
    # a softmax that reads .data itself: its maximum would be frozen by a recording
    monkeypatch.setattr(model, "max_data", lambda values: max(v.data for v in values))
    replay = replayed_as_compiled(5)
    assert "data was read" in replay.document_loss.refused
    assert replay.document_loss.tape is None


def test_a_derived_number_in_other_arithmetic_is_refused(monkeypatch):
    declared = model.max_data
    monkeypatch.setattr(model, "max_data", lambda values: declared(values) * 1.0)
    replay = replayed_as_compiled(3)
    assert "__mul__" in replay.document_loss.refused


def test_a_gradient_that_is_not_finite_takes_the_model_code():
    replay, compiled = trainer("replay"), trainer("compiled")
    longest = replay.tokenizer.document_tokens(max(DOCS, key=len))
    for t in (replay, compiled):
        grads_after_one_backward(t, longest)  # replay: the recording
        t.params[5].data = math.nan  # a weight of the token table's row "a"
    tokens = replay.tokenizer.document_tokens(DOCS[3])  # "isabella": reads row "a"
    got, want = grads_after_one_backward(replay, tokens), grads_after_one_backward(compiled, tokens)
    assert got == want
    assert any(not math.isfinite(struct.unpack("<d", g)[0]) for g in got[1])
    assert replay.document_loss.model_steps == 1  # the replay's backward handed the step back


def test_a_token_outside_the_vocabulary_raises_as_the_model_code_does():
    replay, compiled = trainer("replay"), trainer("compiled")
    for t in (replay, compiled):
        t.train_step()
    bad = [0, 1, replay.tokenizer.vocab_size + 3]
    errors = []
    for t in (replay, compiled):
        with t.engine.graph(), pytest.raises(IndexError) as info:
            t.document_loss(bad)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_a_pow_the_replay_cannot_recompute_keeps_its_local_grad():
    pure, compiled = get_engine("pure"), get_engine("compiled")
    k = 2 ** 53 + 1  # k - 1 as Python computes it is not the double k minus 1
    want = (pure.Value(-1.0) ** k)._local_grads[0]
    with compiled.graph():
        x = compiled.Value(-1.0)
        y = x ** k
        assert y._local_grads[0] == want == 9007199254740992.0
        assert y.op == "custom"
        with pytest.raises(ValueError, match="cannot be recomputed"):
            x.arena.replay(y.node)


def test_adams_fast_powers_are_pows_doubles():
    from microgpt import _engine
    rng = random.Random(11)
    xs = [rng.gauss(0, 1) * 10.0 ** rng.randint(-12, 6) for _ in range(200_000)]
    xs += [0.0, -0.0, 1e-320, 1e300, math.inf, -math.inf, 2.0 ** -600, 3.0]
    pairs = _engine._adam_powers(xs, squares=True)
    assert all(bits(a) == bits(b) for a, b in pairs)
    roots = _engine._adam_powers([abs(x) for x in xs], squares=False)
    assert all(bits(a) == bits(b) for a, b in roots)


def test_a_replayed_backward_leaves_the_pure_engines_grad_types():
    # a parameter the step reaches gets a float grad; one it does not (a token table
    # row of a character the document lacks) keeps the int 0, as on the pure engine
    replay, pure = trainer("replay"), trainer("pure")
    tokens = replay.tokenizer.document_tokens("emma")
    grads_after_one_backward(replay, replay.tokenizer.document_tokens(max(DOCS, key=len)))  # records
    types, losses = [], []
    for t in (replay, pure):
        with t.engine.graph():
            loss = t.document_loss(tokens)
            loss.backward()
        losses.append(loss)
        types.append([type(p.grad) for p in t.params])
    assert type(losses[0]).__name__ == "ReplayedLoss"  # the step was replayed, not built
    assert types[0] == types[1]
    assert int in types[1] and float in types[1]


def test_a_tapes_backward_needs_its_forward():
    t = trainer("replay")
    with t.engine.graph():
        t.document_loss.record(t.tokenizer.document_tokens(DOCS[0]))  # a fresh tape, never run
    with pytest.raises(RuntimeError, match="forward"):
        t.document_loss.tape.backward()

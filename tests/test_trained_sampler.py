"""After training, replay samples on the training tape (replay_trained.py): the
same names as the compiled engine and as the sampler's own recording, draw for
draw, with nothing recorded for sampling; and where the tape cannot serve (it
holds less than the block, other parameters, a forward that fails) the
sampler's own way gives the same names again. Training goes on after it as if
nothing had sampled."""
import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from support import SMALL_DOCS, TEN_NAMES, bits, run_main, sample_texts, small_trainer, write_docs

from microgpt import available_engines, get_engine, replay_trained, rundir
from microgpt.errors import DataError
from microgpt.run import RunSettings, build_run
from microgpt.sampling import make_sampler, sample

if "replay" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

REPLAY, COMPILED = get_engine("replay"), get_engine("compiled")
# lines of 67 characters: a tape of the whole block of 64 positions
LINES = [" ".join(TEN_NAMES[k:] + TEN_NAMES[:k]) for k in range(len(TEN_NAMES))]


def draw(engine, trainer, sampler, temperature=0.5, count=4, seed=5, **options):
    """count documents from sampler after random.seed(seed)."""
    random.seed(seed)
    return [sample(engine, trainer.sd, trainer.config, trainer.tokenizer, temperature, sampler=sampler, **options)
            for _ in range(count)]


def reusing(trainer, count=4):
    """A replay sampler told the trainer's document loss trained its weights."""
    return make_sampler(REPLAY, trainer.sd, trainer.config, count, trained=trainer.document_loss)


def own(trainer, count=4):
    """Replay's sampler as it is without the training tape: its own recording."""
    return make_sampler(REPLAY, trainer.sd, trainer.config, count)


def compiled(trainer):
    return make_sampler(COMPILED, trainer.sd, trainer.config)


def assert_served(sampler):
    """Every position came from the training tape: no recording, no model code."""
    assert sampler.trained is not None and sampler.tapes == {} and sampler.model_positions == 0


@pytest.mark.parametrize("golden_name", ["names_default_20_steps.json", "names_2layer_10_steps.json"])
def test_the_golden_samples_come_from_the_training_tape(names_txt, golden_name):
    from support import load_golden
    golden = load_golden(golden_name)
    cfg = golden["config"]
    run = build_run(REPLAY, RunSettings(input=str(names_txt), seed=golden["seed"], n_layer=cfg["n_layer"],
                                        n_embd=cfg["n_embd"], block_size=cfg["block_size"], n_head=cfg["n_head"],
                                        steps=golden["num_steps"]))
    run.trainer.run()
    assert run.trainer.document_loss.tape.n_pos == cfg["block_size"]
    sampler = reusing(run.trainer, golden["num_samples"])
    samples = [sample(REPLAY, run.sd, run.config, run.tokenizer, golden["sample_temperature"], sampler=sampler)
               for _ in range(golden["num_samples"])]
    assert samples == golden["samples"]
    assert_served(sampler)


@pytest.mark.parametrize("n_layer", [4, 1])
def test_a_block_of_64_samples_as_its_own_recording_does(n_layer):
    """4/64/64 and 1/64/64: temperatures (an int one too), top-k and a prompt."""
    trainer = small_trainer("replay", docs=LINES, num_steps=2, n_layer=n_layer, n_embd=64, n_head=4, block_size=64)
    trainer.run()
    for temperature, options in [(0.5, {}), (1, {"top_k": 3}), (1.3, {"prefix": "ava "})]:
        sampler = reusing(trainer)
        got = draw(REPLAY, trainer, sampler, temperature, **options)
        assert got == draw(REPLAY, trainer, own(trainer), temperature, **options)
        assert_served(sampler)
        assert max(map(len, got)) > 8  # (documents long enough to say something of the block)
    if n_layer == 1:  # the model code itself (a minute at 4 layers)
        assert draw(REPLAY, trainer, reusing(trainer), 0.7, count=2) == draw(COMPILED, trainer, compiled(trainer), 0.7, count=2)


def test_small_model_every_option_as_the_compiled_engine():
    trainer = small_trainer("replay", num_steps=30)
    trainer.run()
    for temperature, options in [(0.5, {}), (2, {}), (0.8, {"top_k": 2}), (1.0, {"prefix": "em"})]:
        sampler = reusing(trainer, 12)
        got = draw(REPLAY, trainer, sampler, temperature, count=12, **options)
        assert got == draw(COMPILED, trainer, compiled(trainer), temperature, count=12, **options)
        assert got == draw(REPLAY, trainer, own(trainer, 12), temperature, count=12, **options)
        assert_served(sampler)


def test_tempered_probabilities_are_the_sampler_recordings_bit_for_bit():
    trainer = small_trainer("replay", num_steps=3)
    trainer.run()
    tape, tokens = trainer.document_loss.tape, trainer.tokenizer.document_tokens("charlotte")[:9]
    tape.forward(tokens)
    with pytest.raises(ValueError, match="has not been computed"):
        tape.tempered_probs(len(tokens) - 1, 1.0)
    for temperature in (0.7, 1.0, 3):
        mine = [list(map(bits, tape.tempered_probs(p, temperature ** -1))) for p in range(8)]
        recorded, why = own(trainer).make_tape(tokens, 8, temperature, forward_only=True)
        assert why is None and recorded.forward(tokens) is not None
        assert mine == [list(map(bits, recorded.probs(p))) for p in range(8)]
    # at temperature 1 they are the training forward's own probabilities
    assert [list(map(bits, tape.tempered_probs(p, 1.0))) for p in range(8)] == [list(map(bits, tape.probs(p))) for p in range(8)]


def test_a_tape_shorter_than_the_block_is_not_used():
    trainer = small_trainer("replay", num_steps=5, block_size=32)  # the names: a tape of 16 positions
    trainer.run()
    assert trainer.document_loss.tape.n_pos == 16
    sampler = reusing(trainer, 12)
    got = draw(REPLAY, trainer, sampler, count=12)
    assert got == draw(COMPILED, trainer, compiled(trainer), count=12)
    assert sampler.trained.tape() is None and sampler.tapes != {}  # its own recording


def test_another_models_tape_is_not_used():
    """Another model's recording, or a loss without one (the compiled engine's trainer)."""
    trainer, other, model_code = (small_trainer(engine, num_steps=4, seed=seed)
                                  for engine, seed in (("replay", 3), ("replay", 4), ("compiled", 3)))
    for t in (trainer, other, model_code):
        t.run()
    expected = draw(COMPILED, trainer, compiled(trainer), count=12)
    for not_these in (other.document_loss, model_code.document_loss):
        sampler = make_sampler(REPLAY, trainer.sd, trainer.config, 12, trained=not_these)
        assert draw(REPLAY, trainer, sampler, count=12) == expected
        assert sampler.trained.tape() is None


def test_a_forward_that_fails_hands_the_document_to_the_sampler_own_way():
    """Token 0's logits made huge: where one is negative, its probability is 0.0
    and the forward's -log of it (token 0 is the target a sampled position is
    given) fails; the document goes on the sampler's own way (whose tape fails
    the same way: the model code), from its first position."""
    trainer = small_trainer("replay", num_steps=5)
    trainer.run()
    for p in trainer.sd["lm_head"][0]:
        p.data *= 1e5
    sampler = reusing(trainer, 12)
    got = draw(REPLAY, trainer, sampler, count=12)
    assert got == draw(COMPILED, trainer, compiled(trainer), count=12)
    assert sampler.trained is None and sampler.model_positions > 0  # it failed, and stopped reusing
    first = reusing(trainer, 12)
    draw(REPLAY, trainer, first, count=1)
    assert first.trained is None and first.documents_left == 11  # (the one that fell back counted once)


def test_probabilities_that_are_not_finite_raise_as_the_model_code():
    """Logits of some 10 over a temperature of 1e-308: products of inf, an inf
    minus the inf maximum, probabilities of nan: the same error as the model code's."""
    trainer = small_trainer("replay", num_steps=3)
    trainer.run()
    for p in trainer.sd["lm_head"][0] + trainer.sd["lm_head"][1]:
        p.data *= 100
    errors = []
    for engine, sampler in [(REPLAY, reusing(trainer)), (COMPILED, compiled(trainer))]:
        with pytest.raises(DataError) as e:
            draw(engine, trainer, sampler, temperature=1e-308)
        errors.append(str(e.value))
        assert engine is COMPILED or sampler.trained is not None  # (the tape computed them)
    assert errors[0] == errors[1] and "not finite" in errors[0]


def test_training_goes_on_after_sampling_as_if_nothing_sampled():
    """The tape a sampler used trains on from its next step (a step's forward
    starts at position 0); a loss whose forward a sampler overwrote refuses its
    backward."""
    runs = []
    for sampling in (True, False):
        trainer = small_trainer("replay", num_steps=12)
        losses = [bits(trainer.train_step()[1]) for _ in range(6)]
        if sampling:
            with trainer.engine.graph():
                loss = trainer.forward(trainer.tokens_at(6))
                draw(REPLAY, trainer, reusing(trainer))
                with pytest.raises(RuntimeError, match="must follow its own forward"):
                    loss.backward()
        losses += [bits(trainer.train_step()[1]) for _ in range(6)]
        runs.append((losses, [bits(p.data) for p in trainer.params], draw(REPLAY, trainer, reusing(trainer), count=8)))
    assert runs[0] == runs[1]


def test_two_documents_at_once_each_read_their_own_positions():
    """Documents stepped in turn on the one training tape (or on the sampler's
    own recording): each computes its positions again from the first when the
    other ran a forward since."""
    trainer = small_trainer("replay", num_steps=5)
    trainer.run()
    firsts, seconds = (trainer.tokenizer.document_tokens(name)[:8] for name in ("isabella", "charlotte"))
    # (the second: told of 4 documents of 8 positions, it records before the first)
    probs, samplers = [], (reusing(trainer), make_sampler(REPLAY, trainer.sd, trainer.config, 4, 8), compiled(trainer))
    for sampler in samplers:
        with REPLAY.graph():
            one, two = sampler.document(0.5), sampler.document(0.5)
            probs.append([list(map(bits, step(tok, p))) for p, pair in enumerate(zip(firsts, seconds))
                          for step, tok in zip((one, two), pair)])
    assert probs[0] == probs[2] and probs[1] == probs[2]
    assert_served(samplers[0])
    assert samplers[1].model_positions == 0 and list(samplers[1].tapes) == [0.5]


def test_train_and_a_resumed_train_sample_on_their_training_tape(tmp_path, monkeypatch):
    """`microgpt train` (a block of 8: every recording holds it) samples on the
    training tape: the compiled engine's names; a run resumed from its step 4
    too, the same names; a finished run resumed trains no step (no tape): its
    sampler's own way, the same names again."""
    served = []
    on_tape, save = replay_trained.TrainedDocument.on_tape, rundir.save
    monkeypatch.setattr(replay_trained.TrainedDocument, "on_tape",
                        lambda doc, pos_id, want: served.append(pos_id) or on_tape(doc, pos_id, want))

    def save_and_copy(ckpt, directory):  # (the checkpoint of step 4, kept for resuming)
        path = save(ckpt, directory)
        if ckpt.step == 4:
            shutil.copytree(directory, tmp_path / "at-4")
        return path
    monkeypatch.setattr(rundir, "save", save_and_copy)
    text = write_docs(tmp_path / "docs.txt", SMALL_DOCS)
    tiny = ["--n-embd", 8, "--n-head", 2, "--block-size", 8, "--num-samples", 6]
    samples, positions = {}, {}
    for name, argv in [("compiled", ["-i", text, "--steps", 8, "--engine", "compiled"]),
                       ("full", ["-i", text, "--steps", 8, "--engine", "replay", "--save-every", 4, "-o", tmp_path / "r"]),
                       ("resumed", ["--resume", tmp_path / "at-4", "--engine", "replay"]),
                       ("again", ["--resume", tmp_path / "at-4", "--engine", "replay"])]:
        served.clear()
        status, out, err = run_main(["train", *argv, *tiny])
        assert status == 0, err
        samples[name], positions[name] = sample_texts(out), len(served)
    assert samples["full"] == samples["compiled"] == samples["resumed"] == samples["again"]
    assert len(samples["full"]) == 6
    assert positions["full"] > 0 and positions["resumed"] > 0  # (on the training tape)
    assert positions["compiled"] == 0 and positions["again"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_models_and_options_sample_as_the_compiled_engine(data):
    """Small models of any shape, trained a few steps (weights scaled up
    sometimes: probabilities near 0 and 1), any temperature, top-k and prompt:
    the training tape's probabilities and names are the compiled engine's, or
    the same error."""
    block, n_head = data.draw(st.sampled_from([4, 8])), data.draw(st.sampled_from([1, 2]))
    words = data.draw(st.lists(st.text("abcde", min_size=1, max_size=2 * block), min_size=2, max_size=6))
    trainer = small_trainer("replay", docs=words, seed=data.draw(st.integers(0, 9)),
                            num_steps=data.draw(st.integers(1, 6)), n_layer=data.draw(st.sampled_from([1, 2])),
                            n_embd=4 * n_head, n_head=n_head, block_size=block)
    trainer.run()
    scale = data.draw(st.sampled_from([1, 1, 20]))
    for p in trainer.params:
        p.data *= scale
    temperature = data.draw(st.sampled_from([0.05, 0.5, 1, 3.0]) | st.floats(0.1, 4.0))
    options = {"top_k": data.draw(st.none() | st.integers(1, 3))}
    options["prefix"] = data.draw(st.sampled_from(["", words[0][:block - 1]]))
    tokens = trainer.tokenizer.document_tokens(words[-1])[:block]
    results = []
    for engine, sampler in ((REPLAY, reusing(trainer, 6)), (COMPILED, compiled(trainer))):
        try:
            with engine.graph():  # a document's probabilities, bit for bit
                step = sampler.document(temperature)
                results.append([list(map(bits, step(tok, p))) for p, tok in enumerate(tokens)])
        except ArithmeticError as e:
            results.append(repr(e))
        try:
            results.append(draw(engine, trainer, sampler, temperature, count=5, **options))
        except DataError as e:
            results.append(str(e))
    assert results[:2] == results[2:]

"""`microgpt sample` and the sampler's options (top-k, prompt), on a tiny trained run.

The default sampler must stay the reference's: it is
compared with a verbatim copy of the reference loop, draw for draw.
"""
import random

import pytest
from support import assert_one_error_line, run_main, write_docs

from microgpt import rundir
from microgpt.data import Tokenizer
from microgpt.model import gpt, init_state_dict, softmax
from microgpt.state import restore_weights
from microgpt.train import sample, top_k_weights

DOCS = ["anna", "bob", "carla", "david", "eve", "frank", "grace", "heidi", "ivan", "judy",
        "mallory", "oscar", "peggy", "trent", "victor", "walter"]
TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8"]


def texts(out):
    return [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("sample ")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    status, out, err = run_main(["train", "-i", write_docs(d / "tiny.txt", DOCS), *TINY, "--steps", 30, "--num-samples", 8,
                            "--engine", "pure", "-o", d / "run"])
    assert status == 0, err
    return d / "run", texts(out)


def test_sample_continues_the_training_runs_generator(run_dir, engine):
    directory, trained = run_dir
    status, out, err = run_main(["sample", "-o", directory, "--num-samples", 8, "--engine", engine.name])
    assert status == 0, err
    assert texts(out) == trained
    # sampling does not move the checkpoint's generator: the same again
    assert texts(run_main(["sample", "-o", directory, "--num-samples", 8, "--engine", engine.name])[1]) == trained


def test_seed_makes_samples_repeatable(run_dir):
    directory, trained = run_dir
    a = texts(run_main(["sample", "-o", directory, "--seed", 3, "--num-samples", 6])[1])
    b = texts(run_main(["sample", "-o", directory, "--seed", 3, "--num-samples", 6])[1])
    c = texts(run_main(["sample", "-o", directory, "--seed", 4, "--num-samples", 6])[1])
    assert a == b and len(a) == 6
    assert a != c


def test_default_sampler_is_the_reference(run_dir, engine):
    """sample() with its defaults against the reference loop, on the same generator state."""
    ckpt = rundir.load(run_dir[0])
    tok = Tokenizer(ckpt.chars)
    sd = init_state_dict(engine.Value, ckpt.config)
    restore_weights(ckpt, sd)

    def reference_sample(temperature=0.5):
        config = ckpt.config
        keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
        token_id, out = tok.bos, []
        with engine.graph():
            for pos_id in range(config.block_size):
                logits = gpt(sd, config, token_id, pos_id, keys, values)
                probs = softmax([l / temperature for l in logits])
                token_id = random.choices(range(tok.vocab_size), weights=[p.data for p in probs])[0]
                if token_id == tok.bos:
                    break
                out.append(tok.chars[token_id])
        return "".join(out)

    for temperature in (0.5, 1.3):
        random.seed(11)
        expected = [reference_sample(temperature) for _ in range(6)]
        state_after = random.getstate()
        random.seed(11)
        assert [sample(engine, sd, ckpt.config, tok, temperature) for _ in range(6)] == expected
        assert random.getstate() == state_after  # the same draws, no more


def test_top_k_1_is_greedy_and_top_k_vocab_is_plain(run_dir):
    directory, trained = run_dir
    greedy = [texts(run_main(["sample", "-o", directory, "--top-k", 1, "--seed", s, "--num-samples", 3])[1])
              for s in (1, 2)]
    assert greedy[0] == greedy[1] and len(set(greedy[0])) == 1  # no randomness left
    vocab_size = rundir.load(directory).config.vocab_size
    assert texts(run_main(["sample", "-o", directory, "--top-k", vocab_size, "--num-samples", 8])[1]) == trained


def test_top_k_weights():
    assert top_k_weights([0.1, 0.5, 0.2, 0.2], 2) == [0.0, 0.5, 0.2, 0.0]  # a tie keeps the lower id
    assert top_k_weights([0.1, 0.5], 5) == [0.1, 0.5]


def test_prompt_is_continued(run_dir, engine):
    directory, _ = run_dir
    status, out, err = run_main(["sample", "-o", directory, "--prompt", "ma", "--num-samples", 5, "--engine", engine.name])
    assert status == 0, err
    got = texts(out)
    assert len(got) == 5 and all(t.startswith("ma") for t in got)
    assert all(len(t) <= 8 for t in got)  # block_size positions: at most 8 characters, as in the reference


@pytest.mark.parametrize("argv,mentions", [
    (["--prompt", "aZb1Z"], "outside the model's vocabulary: 'Z', '1'"),
    (["--prompt", "abcdefgh"], "--prompt is 8 characters"),
    (["--top-k", 0], "--top-k"),
    (["--temperature", 0], "--temperature"),
    (["--num-samples", -1], "--num-samples"),
    (["--engine", "turbo"], "unknown engine"),
])
def test_bad_sample_options(run_dir, argv, mentions):
    status, out, err = run_main(["sample", "-o", run_dir[0], *argv])
    assert status == 2
    assert mentions in assert_one_error_line(err)
    assert out == ""


def test_a_prompt_of_block_size_minus_one_still_samples(run_dir):
    status, out, err = run_main(["sample", "-o", run_dir[0], "--prompt", "abcdefg", "--num-samples", 2])
    assert status == 0, err
    assert all(t.startswith("abcdefg") and len(t) <= 8 for t in texts(out))

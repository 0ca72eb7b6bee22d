"""A sampler's tape is built for forward passes only: no pull lists (its
backward never runs, and refuses to), the same probabilities as a tape built
with its backward, bit for bit."""
import random
import struct

import pytest

from microgpt import available_engines, get_engine, replay
from microgpt.data import Tokenizer
from microgpt.model import Config, init_state_dict

if "replay" not in available_engines():
    pytest.skip("the compiled engine is not built here", allow_module_level=True)

DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn"]


def test_a_forward_only_tape_has_no_pulls_and_the_same_probabilities():
    eng = get_engine("replay")
    random.seed(11)
    tok = Tokenizer.from_documents(DOCS)
    cfg = Config(vocab_size=tok.vocab_size, n_embd=12, n_head=3, block_size=8)
    sd = init_state_dict(eng.Value, cfg)
    rec = replay.Recorder(sd, cfg)
    tokens = tok.document_tokens(DOCS[3])[:9]
    probs = {}
    for forward_only in (False, True):
        tape, why = rec.make_tape(tokens, 8, 0.7, forward_only=forward_only)
        assert why is None
        counts = tape.counts(8)
        assert (counts["pulls"] == 0) == forward_only
        tape.forward(tokens)
        probs[forward_only] = [struct.pack("<d", p) for q in range(8) for p in tape.probs(q)]
        if forward_only:
            with pytest.raises(RuntimeError, match="forward passes only"):
                tape.backward()
    assert probs[True] == probs[False]

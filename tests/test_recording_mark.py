"""A recording releases its graph through a scope, not a bare mark: the default arena
drops unnamed nodes on top when a handle goes, so a mark taken without pinning could
lie past the arena's end by the time the recording is released."""
from microgpt import get_engine, replay
from microgpt.data import Tokenizer
from microgpt.model import Config, init_state_dict
from microgpt.train import Trainer

DOCS = ["emma", "olivia", "ava", "isabella", "sophia"]


def test_a_refused_recording_outside_a_scope_leaves_the_arena_as_it_was(monkeypatch):
    import random
    random.seed(3)
    eng = get_engine("replay")
    tok = Tokenizer.from_documents(DOCS)
    cfg = Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, block_size=8)
    dl = Trainer(eng, init_state_dict(eng.Value, cfg), cfg, list(DOCS), tok, num_steps=20).document_loss
    arena = dl.params[0].arena
    y = dl.params[0] * 3.0  # rows on top that no handle names once y goes, too few to drop
    del y
    before = len(arena)
    plain = replay.document_loss

    def reads_data(sd, config, tokens, observe=None, temperature=None, watch=None):
        out = plain(sd, config, tokens, None, temperature, watch)
        out.data  # a read the recorder was not told of: the recording is refused
        return out

    monkeypatch.setattr(replay, "document_loss", reads_data)
    tape, why = replay.record_once(dl.sd, dl.config, dl.params, dl.table,
                                   tok.document_tokens(DOCS[3])[:9], None, False, False)
    assert tape is None and ".data was read" in why
    assert len(arena) == before  # the recording's graph released, nothing below it touched
    assert all(p.data == p.data for p in dl.params)  # the parameters still read (no stale handle)

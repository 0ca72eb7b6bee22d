"""A recording releases its graph through a scope, not a bare mark: the default arena
drops unnamed nodes on top when a handle goes, so a mark taken without pinning could
lie past the arena's end by the time the recording is released."""
from microgpt import replay

from support import small_trainer

DOCS = ["emma", "olivia", "ava", "isabella", "sophia"]


def test_a_refused_recording_outside_a_scope_leaves_the_arena_as_it_was(monkeypatch):
    t = small_trainer("replay", docs=DOCS)
    dl = t.document_loss
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
                                   t.tokenizer.document_tokens(DOCS[3])[:9], None, False, False)
    assert tape is None and ".data was read" in why
    assert len(arena) == before  # the recording's graph released, nothing below it touched
    assert all(p.data == p.data for p in dl.params)  # the parameters still read (no stale handle)

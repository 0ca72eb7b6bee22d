"""Every build of the tape's kernels, on one machine: MICROGPT_SIMD=avx2 or
=plain narrows the lanes the kernels take (lanes.h), so a processor with
AVX-512 also runs the AVX2 and plain builds. Each lane is its own sum, added
in the reference's order, so every build replays the compiled engine's
numbers bit for bit: losses, weights and a sampler's names."""
from pathlib import Path

import pytest

from microgpt import available_engines
from support import python_child

pytestmark = pytest.mark.skipif("replay" not in available_engines(), reason="the compiled engine is not built here")

# widths that fill registers of eight and of four, and ones that leave a rest
CONFIGS = [dict(n_layer=1, n_embd=64, n_head=4, block_size=12),
           dict(n_layer=2, n_embd=40, n_head=2, block_size=10),
           dict(n_layer=1, n_embd=20, n_head=2, block_size=16)]

RUN = """
import json, sys
sys.path.insert(0, {tests!r})
from microgpt import _engine
from test_tape import trainer, losses_and_weights
from test_wide_kernels import DOCS
from microgpt.sampling import make_sampler, sample
out = []
for cfg in {configs!r}:
    t = trainer({engine!r}, docs=DOCS, **cfg)
    lw = losses_and_weights(t, 4)
    eng, sd, c, tok = t.engine, t.sd, t.config, t.tokenizer
    own = make_sampler(eng, sd, c, 3)  # its own recording (replay), and on the training tape
    on_tape = make_sampler(eng, sd, c, 3, trained=t.document_loss)
    names = [sample(eng, sd, c, tok, sampler=s) for s in (own, on_tape) for _ in range(3)]
    out.append([repr(lw), names])
print(json.dumps([_engine.simd_lanes(), out]))
"""


def run(engine, simd=None):
    return python_child(RUN.format(tests=str(Path(__file__).parent), configs=CONFIGS, engine=engine), simd)


@pytest.fixture(scope="module")
def compiled():
    return run("compiled")[1]


@pytest.mark.parametrize("simd", [None, "avx2", "plain"])
def test_every_build_of_the_kernels_replays_the_compiled_numbers(compiled, simd):
    lanes, got = run("replay", simd)
    if simd == "plain":
        assert lanes == "plain"
    elif simd == "avx2":
        assert lanes in ("avx2", "plain")
    assert got == compiled

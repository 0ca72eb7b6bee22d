"""Shared fixtures: the engine parametrization, the names data set, the golden figures."""
import json
import os
import shutil
from pathlib import Path

import pytest

from microgpt import available_engines, get_engine

HERE = Path(__file__).resolve().parent
GOLDEN_DIR = HERE / "golden"
# ../shared beside the project root holds the names data set; it is never committed here
NAMES_TXT = Path(os.environ.get("MICROGPT_NAMES_TXT", HERE.parent.parent / "shared" / "data" / "names.txt"))


def load_golden(name):
    with open(GOLDEN_DIR / name, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(params=available_engines())
def engine(request):
    """Every engine built here: the same test runs on pure and on compiled."""
    return get_engine(request.param)


@pytest.fixture(scope="session")
def names_txt():
    if not NAMES_TXT.is_file():
        pytest.fail(f"the names data set is missing at {NAMES_TXT} (set MICROGPT_NAMES_TXT)")
    return NAMES_TXT


@pytest.fixture(scope="session")
def names_cache(tmp_path_factory, names_txt):
    """A cache directory holding names.txt, so nothing downloads."""
    d = tmp_path_factory.mktemp("cache")
    shutil.copy(names_txt, d / "names.txt")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, names_cache):
    # every test sees a cache with the names data and no stray engine choice
    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(names_cache))
    monkeypatch.delenv("MICROGPT_ENGINE", raising=False)
    monkeypatch.delenv("MICROGPT_NAMES_URL", raising=False)

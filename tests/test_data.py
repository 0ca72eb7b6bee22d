"""microgpt/data.py: documents, the tokenizer, and the names data set's cache and download.

The download is exercised against a real HTTP server on 127.0.0.1 serving the
names data set's bytes; no test here reaches the internet.
"""
import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from microgpt import data
from microgpt import DataError
from microgpt.data import Tokenizer, load_documents, parse_documents, write_atomic
from microgpt.errors import NamesDataError

NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"  # stated in issue 2


# ---------------------------------------------------------------- parse_documents

def test_lines_are_stripped_and_blank_lines_dropped():
    raw = b"  emma \n\n\t\nolivia\n   \n ava\n"
    assert parse_documents(raw, "x.txt") == ["emma", "olivia", "ava"]


def test_inner_spaces_survive_stripping():
    # a document is the stripped line, not a list of words
    assert parse_documents(b" new york \n", "x") == ["new york"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_splits_documents(newline):
    raw = newline.join([b"anna", b"", b"bob", b"carl"]) + newline
    docs = parse_documents(raw, "x")
    assert docs == ["anna", "bob", "carl"]
    assert not any("\r" in d or "\n" in d for d in docs)


def test_mixed_line_endings_and_no_final_newline():
    assert parse_documents(b"a\r\nb\rc\nd", "x") == ["a", "b", "c", "d"]


def test_utf8_text_is_decoded():
    assert parse_documents("zoë\nrenée\n".encode("utf-8"), "x") == ["zoë", "renée"]


def test_bytes_that_are_not_utf8_raise_naming_the_offset():
    raw = b"emma\nol\xffivia\n"
    with pytest.raises(DataError) as exc:
        parse_documents(raw, "bad.txt")
    message = str(exc.value)
    assert "bad.txt" in message and "UTF-8" in message
    offset = raw.index(b"\xff")
    assert f"offset {offset}" in message
    assert "\n" not in message  # one line for the user


@pytest.mark.parametrize("raw", [b"", b"\n\n", b"  \r\n\t\r\n   "])
def test_no_non_blank_line_raises(raw):
    with pytest.raises(DataError) as exc:
        parse_documents(raw, "empty.txt")
    assert "empty.txt" in str(exc.value)
    assert "no non-blank lines" in str(exc.value)


# ---------------------------------------------------------------- Tokenizer

def test_tokenizer_is_sorted_chars_then_bos():
    tok = Tokenizer.from_documents(["cab", "bad", "ace"])
    assert tok.chars == ["a", "b", "c", "d", "e"]
    assert tok.bos == 5 and tok.vocab_size == 6
    assert tok.encode("dab") == [3, 0, 1]
    assert tok.decode([3, 0, 1]) == "dab"


def test_document_tokens_are_bos_ids_bos():
    tok = Tokenizer.from_documents(["zy", "x"])
    assert tok.document_tokens("yzx") == [tok.bos, 1, 2, 0, tok.bos]
    assert tok.document_tokens("") == [tok.bos, tok.bos]


def test_tokenizer_sorts_by_code_point():
    # sorted(set(...)) is by code point: upper case before lower case, non-ASCII last
    tok = Tokenizer.from_documents(["éa", "B"])
    assert tok.chars == ["B", "a", "é"]


def test_names_data_set_tokenizer(names_txt):
    docs, _, _ = load_documents(str(names_txt))
    tok = Tokenizer.from_documents(docs)
    assert tok.chars == [chr(c) for c in range(ord("a"), ord("z") + 1)]
    assert tok.bos == 26 and tok.vocab_size == 27


# ---------------------------------------------------------------- load_documents with a path

def test_load_documents_from_a_path(tmp_path):
    f = tmp_path / "own.txt"
    raw = b"hello\n\nworld \r\n"
    f.write_bytes(raw)
    docs, source, sha = load_documents(str(f))
    assert docs == ["hello", "world"]
    assert source == str(f)
    assert sha == hashlib.sha256(raw).hexdigest()


def test_load_documents_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError) as exc:
        load_documents(str(missing))
    assert str(missing) in str(exc.value)


def test_load_documents_directory_raises(tmp_path):
    with pytest.raises(DataError) as exc:
        load_documents(str(tmp_path))
    assert str(tmp_path) in str(exc.value)


def test_load_documents_names_file(names_txt):
    docs, _, sha = load_documents(str(names_txt))
    assert len(docs) == 32033
    assert sha == NAMES_SHA256
    assert data.NAMES_SHA256 == NAMES_SHA256


# ---------------------------------------------------------------- the download, through a local server

class NamesServer:
    """A real HTTP server on 127.0.0.1 (port chosen by the OS) serving one body; counts GETs."""

    def __init__(self, body):
        self.body = body
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll interval: shutdown() waits up to one interval, 0.5 s by default
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/karpathy/makemore/988aa59/names.txt"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def offline_env(monkeypatch):
    # urllib honours *_proxy variables: without this a proxy could be asked for
    # 127.0.0.1, and the request would neither stay local nor reach our server
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def names_bytes(names_txt):
    return Path(names_txt).read_bytes()


def use_cache(monkeypatch, folder):
    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(folder))
    return Path(folder) / "names.txt"


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_download_into_an_empty_cache_then_reuse_it(offline_env, monkeypatch, tmp_path, names_bytes):
    # a cache folder that does not exist yet, as ~/.cache/microgpt on a new machine
    cached = use_cache(monkeypatch, tmp_path / "fresh" / "microgpt")
    with NamesServer(names_bytes) as server:
        monkeypatch.setenv("MICROGPT_NAMES_URL", server.url)
        docs, source, sha = load_documents()
        assert server.requests == 1
        assert len(docs) == 32033
        assert sha == NAMES_SHA256
        assert Path(source) == cached
        assert sha256_file(cached) == NAMES_SHA256
        # nothing but the data set is left behind (no temp file from the atomic write)
        assert sorted(os.listdir(cached.parent)) == ["names.txt"]

        docs_again, _, _ = load_documents()
        assert server.requests == 1  # the verified cache answered; the server was not asked
        assert docs_again == docs


def test_download_with_wrong_checksum_saves_nothing(offline_env, monkeypatch, tmp_path, names_bytes):
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = use_cache(monkeypatch, cache)
    # one letter changed: still a fine text file, so only the checksum can catch it
    tampered = names_bytes.replace(b"emma", b"emmb", 1)
    assert tampered != names_bytes
    with NamesServer(tampered) as server:
        monkeypatch.setenv("MICROGPT_NAMES_URL", server.url)
        with pytest.raises(DataError) as exc:
            load_documents()
        assert server.requests == 1
    message = str(exc.value)
    assert "SHA-256" in message
    assert hashlib.sha256(tampered).hexdigest() in message
    assert "\n" not in message
    assert not cached.exists()
    assert os.listdir(cache) == []  # no temp file either


def test_server_down_fails_at_once_naming_the_url(offline_env, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    use_cache(monkeypatch, cache)
    # a port that was just free: bind it, note it, close it; nothing listens there now
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/names.txt"
    monkeypatch.setenv("MICROGPT_NAMES_URL", url)
    t0 = time.monotonic()
    with pytest.raises(NamesDataError) as exc:
        load_documents()
    elapsed = time.monotonic() - t0
    message = str(exc.value)
    assert message.startswith(f"the names data set is not in the cache ({cache / 'names.txt'}) and cannot "
                              f"be downloaded from {url} (")
    assert f"copy names.txt (SHA-256 {NAMES_SHA256[:16]}...) to {cache / 'names.txt'}" in message
    assert "--" not in message  # the library says what happened; the command line adds its flags
    assert "\n" not in message
    # a refused connection must not wait out the download timeout
    assert elapsed < min(5.0, data.DOWNLOAD_TIMEOUT)
    assert os.listdir(cache) == []


def test_cached_file_with_wrong_checksum_is_refused_and_kept(offline_env, monkeypatch, tmp_path, names_bytes):
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = use_cache(monkeypatch, cache)
    # half the data set, or another names.txt put there by hand: it parses, but it is not the data set
    wrong = names_bytes[: len(names_bytes) // 2]
    cached.write_bytes(wrong)
    with NamesServer(names_bytes) as server:
        monkeypatch.setenv("MICROGPT_NAMES_URL", server.url)
        with pytest.raises(NamesDataError) as exc:
            load_documents()
        assert server.requests == 0  # neither trained on nor replaced behind the user's back
    message = str(exc.value)
    assert str(cached) in message and hashlib.sha256(wrong).hexdigest() in message and NAMES_SHA256 in message
    assert "delete it" in message and "\n" not in message
    assert cached.read_bytes() == wrong
    assert sorted(os.listdir(cache)) == ["names.txt"]
    # deleted, it is downloaded again
    cached.unlink()
    with NamesServer(names_bytes) as server:
        monkeypatch.setenv("MICROGPT_NAMES_URL", server.url)
        docs, _, sha = load_documents()
    assert len(docs) == 32033 and sha == NAMES_SHA256 and cached.read_bytes() == names_bytes


def test_verified_cache_is_used_without_any_server(offline_env, monkeypatch, tmp_path, names_bytes):
    cached = use_cache(monkeypatch, tmp_path)
    cached.write_bytes(names_bytes)
    # a URL nobody answers: reaching for it would fail the test
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MICROGPT_NAMES_URL", f"http://127.0.0.1:{port}/names.txt")
    docs, source, sha = load_documents()
    assert len(docs) == 32033 and sha == NAMES_SHA256 and Path(source) == cached


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    # a checkpoint, a plot or the cached data set is a normal file, not a private one
    umask = os.umask(0o022)
    try:
        path = tmp_path / "out.bin"
        write_atomic(path, b"x")
        assert (path.stat().st_mode & 0o777) == 0o644
        assert path.read_bytes() == b"x"
    finally:
        os.umask(umask)

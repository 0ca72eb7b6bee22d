"""Documents and the tokenizer.

A document is one stripped, non-empty line of a UTF-8 text file. Without an
input file the names data set is used: looked up in a cache directory and, when
absent, downloaded once, checked against its SHA-256 and written atomically.
"""
import hashlib
import http.client
import os
import stat
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request

from .errors import DataError, NamesDataError

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/988aa59/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
MAX_INPUT_BYTES = 256 * 1024 * 1024  # an input file larger than this is refused, unread
DOWNLOAD_TIMEOUT = 20  # seconds any one wait may take; an offline machine fails at once
DOWNLOAD_DEADLINE = 120  # seconds the whole download may take (a server may send a byte at a time)


def cache_dir():
    return os.environ.get("MICROGPT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "microgpt")


def sha256_bytes(raw):
    return hashlib.sha256(raw).hexdigest()


def parse_documents(raw, source):
    """Documents from the bytes of a text file: stripped lines, blank ones dropped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source} is not UTF-8 text (invalid byte at offset {e.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark says how the file is encoded; it is not text
    # the same line breaks as iterating over a file opened in text mode
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    docs = [line.strip() for line in lines if line.strip()]
    if not docs:
        raise DataError(f"{source} has no non-blank lines: nothing to train on")
    return docs


def read_utf8_lines(path, what):
    """The lines of a UTF-8 file read as read_bytes reads it; DataError naming it `what`
    otherwise ("cannot read log file x", "x is not a UTF-8 log file")."""
    try:
        raw = read_bytes(path)
    except DataError as e:
        raise DataError(str(e).replace("input file", what, 1)) from None
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 {what}") from None


def read_bytes(path):
    """The bytes of a regular file of at most MAX_INPUT_BYTES; DataError otherwise.
    (Opened without blocking, so a FIFO is refused rather than waited on.)"""
    path = os.fspath(path)
    if "\0" in path:
        raise DataError(f"cannot read input file {path!r}: a path cannot hold a NUL character")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise DataError(f"cannot read input file {path}: {e.strerror or e}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_INPUT_BYTES:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"input file {path} is not a regular file (a device, a FIFO or a directory)")
        raise DataError(f"input file {path} is larger than the limit of {MAX_INPUT_BYTES} bytes")
    with os.fdopen(fd, "rb", buffering=0) as f:
        try:
            raw = _read_up_to(f, MAX_INPUT_BYTES + 1)
        except OSError as e:
            raise DataError(f"cannot read input file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise DataError(f"input file {path} is larger than the limit of {MAX_INPUT_BYTES} bytes")
    return raw


def _read_up_to(f, limit):
    chunks, size = [], 0
    while size < limit:
        chunk = f.read(min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def download_names(dest, url=None):
    """Download the names data set to dest, verified and written atomically; returns the bytes."""
    url = url or os.environ.get("MICROGPT_NAMES_URL") or NAMES_URL
    try:
        raw = _fetch(url)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, DataError) as e:
        reason = getattr(e, "reason", None) or e
        raise NamesDataError(f"the names data set is not in the cache ({dest}) and cannot be downloaded "
                             f"from {url} ({reason}): copy names.txt (SHA-256 {NAMES_SHA256[:16]}...) to "
                             f"{dest}, or set MICROGPT_NAMES_URL to where it can be had") from None
    got = sha256_bytes(raw)
    if got != NAMES_SHA256:
        raise NamesDataError(f"the names data set downloaded from {url} has SHA-256 {got}, expected "
                             f"{NAMES_SHA256}; nothing was saved to {dest}")
    write_atomic(dest, raw)
    return raw


def _fetch(url):
    """The bytes at url (at most MAX_INPUT_BYTES + 1 of them). A file: URL is read
    as an input file is (a FIFO or a device is refused, not waited on); anything
    else is fetched by a worker thread, waited for at most DOWNLOAD_DEADLINE seconds
    in all (the socket's timeout bounds each wait, not their sum)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file: URL names a file on this machine, not on {parts.netloc}")
        return read_bytes(urllib.request.url2pathname(parts.path))
    got, stop = {}, threading.Event()

    def work():
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
                chunks, size = [], 0
                while size <= MAX_INPUT_BYTES and not stop.is_set():
                    chunk = response.read(min(1 << 16, MAX_INPUT_BYTES + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                got["raw"] = b"".join(chunks)
        except BaseException as e:  # handed to the caller's thread
            got["error"] = e

    worker = threading.Thread(target=work, name="microgpt-download", daemon=True)
    worker.start()
    worker.join(DOWNLOAD_DEADLINE)
    if worker.is_alive():
        stop.set()  # the worker stops at its next read; nothing it fetched is used
        raise TimeoutError(f"the download did not finish within {DOWNLOAD_DEADLINE} s")
    if "error" in got:
        raise got["error"]
    return got["raw"]


def write_atomic(path, raw, make_folder=True):
    """Write bytes so that path holds either its old content or all of the new one.
    make_folder: create path's folder (and its parents) if missing; else a missing
    folder is an OSError (ENOENT) and nothing is created."""
    folder = os.path.dirname(os.path.abspath(path))
    if make_folder:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        # mkstemp makes the file private (0600); give it the mode open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(folder)  # the rename itself survives a power cut


def _fsync_directory(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def same_file(a, b):
    """Whether two paths name one file: the same real path, or (both existing) one inode
    (`./x/../v.txt`, symlinks and hard links alike). The rule every output flag follows."""
    if same_path(a, b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def names_path():
    return os.path.join(cache_dir(), "names.txt")


def load_names():
    """Bytes of the names data set: the cached copy, else a fresh download.

    A cached file that is not the data set (another SHA-256: a damaged copy, or
    another file put there) is refused and left as it is, rather than trained on or
    replaced: the line names it, both checksums, and what to do."""
    path = names_path()
    if os.path.lexists(path):
        try:
            raw = read_bytes(path)
        except DataError as e:
            what = (f"is a symbolic link to {os.readlink(path)}, which does not exist"
                    if not os.path.exists(path) and os.path.islink(path) else f"cannot be used ({e})")
            raise NamesDataError(f"the cached names data set {path} {what}: delete it (microgpt then "
                                 f"downloads the data set again) or put the right names.txt there") from None
        got = sha256_bytes(raw)
        if got != NAMES_SHA256:
            raise NamesDataError(f"the cached names data set {path} has SHA-256 {got}, not the data set's "
                                 f"{NAMES_SHA256}: it is damaged or another file; delete it (microgpt then "
                                 f"downloads the data set again) or put the right names.txt there")
        return path, raw
    try:
        return path, download_names(path)
    except OSError as e:
        raise DataError(f"cannot write the names data set to {path}: {e.strerror or e}") from None


def load_documents(path=None):
    """(documents, source path, SHA-256 of the file) for path, or for the names data set."""
    if path is None:
        path, raw = load_names()
    else:
        raw = read_bytes(path)
    return parse_documents(raw, path), path, sha256_bytes(raw)


class Tokenizer:
    """Characters to ids: the sorted set of characters, then BOS (begin/end of sequence)."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1

    @classmethod
    def from_documents(cls, docs):
        return cls(sorted(set("".join(docs))))

    def encode(self, text):
        return [self.stoi[ch] for ch in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)

    def document_tokens(self, doc):
        """[BOS] + ids(doc) + [BOS]: the model predicts the first char and the end."""
        return [self.bos] + self.encode(doc) + [self.bos]

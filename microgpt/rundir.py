"""Run directories: where a run's checkpoint lives, written atomically, read back checked.

A run directory holds one file, ``checkpoint.json``, replaced atomically on
every save (temporary file in the same directory, fsync, rename), so a crash
or a ``kill -9`` mid-save leaves the previous checkpoint in place.
"""
import fcntl
import glob
import os
import tempfile

from . import checkpoint
from .data import write_atomic
from .errors import CheckpointError, RunDirectoryInUse

FILENAME = "checkpoint.json"


def checkpoint_path(directory):
    return os.path.join(directory, FILENAME)


def save(ckpt, directory):
    """Write directory/checkpoint.json atomically; returns its path."""
    path = checkpoint_path(directory)
    try:
        write_atomic(path, checkpoint.dumps(ckpt))
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    return path


def load(directory):
    """The checkpoint in a run directory, fully checked; CheckpointError otherwise."""
    if not os.path.exists(directory):
        raise CheckpointError(f"no run directory {directory}: nothing to load")
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory} is a file; give the run directory that holds {FILENAME}")
    path = checkpoint_path(directory)
    try:
        with open(path, "rb", buffering=0) if _regular(path) else _not_regular(path) as f:
            raw = f.read(checkpoint.MAX_CHECKPOINT_BYTES + 1)  # loads() refuses one byte more
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint in {directory} ({path} does not exist)") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    return checkpoint.loads(raw, path)


def _regular(path):
    import stat
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        raise
    except OSError:
        return True  # open() reports it


def _not_regular(path):
    raise CheckpointError(f"{path} is not a regular file")


class RunLock:
    """An exclusive lock on a run directory (flock on the directory itself, so no file is
    added): held while a run may write there, released by close() or when the process ends.

    created: the directories the run made for itself (the run directory, then any parents
    it made), which close() removes while they are still empty: a run that ends before
    its first save leaves no empty directory behind. A directory that was there before,
    or that holds anything, is never removed (os.rmdir removes empty directories only)."""

    def __init__(self, directory, created=()):
        self.directory = directory
        self.created = list(created)
        self.fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise CheckpointError(f"run directory {directory} is in use by another microgpt run "
                                  f"(it holds the directory's lock); wait for it to end") from None

    def close(self):
        if self.fd is not None:
            _remove_empty(self.created)  # while the lock is held: no other run is using them
            os.close(self.fd)  # releases the lock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def prepare_run_dir(directory, *, may_hold_checkpoint=False):
    """Make sure checkpoints can be written to directory before any work starts;
    returns a RunLock on it, which the caller holds while the run may save.

    Refuses a path that is a file, a directory another run holds locked, a
    directory that already holds another run's checkpoint (unless
    may_hold_checkpoint: the run being resumed), and one that cannot be written
    (checked by creating and removing a probe file). Temporary files left by a
    save that was killed are removed. The directories it creates are removed again
    by the lock's close() if the run saved nothing in them."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"run directory {directory} is a file, not a directory")
    missing = _missing_directories(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        _remove_empty(missing)  # parents made before the failure
        raise CheckpointError(f"cannot write to run directory {directory}: {e.strerror or e}") from None
    lock = RunLock(directory, created=missing)
    try:
        if not may_hold_checkpoint and os.path.exists(checkpoint_path(directory)):
            raise RunDirectoryInUse(f"{checkpoint_path(directory)} already exists", directory)
        try:
            for leftover in glob.glob(os.path.join(glob.escape(directory), ".tmp-*" + FILENAME)):
                os.unlink(leftover)
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise CheckpointError(f"cannot write to run directory {directory}: {e.strerror or e}") from None
    except BaseException:
        lock.close()
        raise
    return lock


def _missing_directories(directory):
    """The directories os.makedirs(directory) would create, the deepest first."""
    missing, path = [], os.path.abspath(directory)
    while not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove_empty(directories):
    """Remove the directories, the deepest first, while they are empty."""
    for made in directories:
        try:
            os.rmdir(made)
        except FileNotFoundError:
            continue  # never made, or removed already
        except OSError:
            break  # not empty (a checkpoint was saved): keep it and its parents

"""The checkpoint file format: a Checkpoint to and from JSON, every field checked.

The format (version 1) is described key by key in the README, section "The
checkpoint format"; ``to_dict`` writes it and ``from_dict`` checks every key.
Floats are written with ``repr`` and read back bit for bit. Loading only parses
JSON: nothing in a file is ever executed, and a pickle is refused by name.
Every file is sealed with a content checksum (``content_sha256``): an edit of
any value after the save is refused before a field is read.
Files and run directories are ``rundir.py``'s job; moving a trainer's state in
and out of a Checkpoint is ``state.py``'s.
"""
import hashlib
import json
import math
import random
from dataclasses import dataclass

from . import __version__
from .errors import CheckpointError
from .model import Config, parameter_count

FORMAT = "microgpt-checkpoint"
VERSION = 2               # version 2 added the content checksum
UNSEALED_VERSIONS = (1,)  # written before checksums existed: read, checked field by field only
CHECKSUM_KEY = "content_sha256"
CONFIG_FIELDS = ("vocab_size", "n_layer", "n_embd", "block_size", "n_head", "init_std")

# The largest model microgpt builds (README, "Limits and failure behaviour"): every size
# is checked against these before a single weight is allocated.
MAX_SIZES = {"n_layer": 256, "n_embd": 4096, "block_size": 4096, "n_head": 4096, "vocab_size": 65536}
MAX_PARAMETERS = 10_000_000
MAX_STEPS = 2 ** 63 - 1  # steps a run may count to (the flag --steps and training.num_steps)
MAX_CHECKPOINT_BYTES = 1 << 30  # a checkpoint file larger than this is refused unread


def size_problem(sizes):
    """What is wrong with a model's sizes (a dict with some of MAX_SIZES' keys), or None:
    the one statement of the model-size rules (limits, n_head dividing n_embd).

    The names in the message are settings, as ``{name}`` (a SettingError template)."""
    for name, limit in MAX_SIZES.items():
        value = sizes.get(name)
        if value is not None and value > limit:
            return f"{{{name}}} {value} is above the limit of {limit}"
    if "n_embd" in sizes and "n_head" in sizes and sizes["n_embd"] % sizes["n_head"]:
        return f"{{n_embd}} {sizes['n_embd']} is not divisible by {{n_head}} {sizes['n_head']}"
    if all(k in sizes for k in ("vocab_size", "n_layer", "n_embd", "block_size")):
        count = parameter_count(Config(**{k: sizes[k] for k in ("vocab_size", "n_layer", "n_embd", "block_size")}))
        if count > MAX_PARAMETERS:
            return (f"the model would have {count:,} parameters, above the limit of {MAX_PARAMETERS:,} "
                    f"(lower {{n_embd}}, {{n_layer}} or {{block_size}})")
    return None


@dataclass
class Checkpoint:
    config: Config
    chars: list          # vocabulary, in token-id order
    weights: dict        # name -> rows of floats
    adam_m: dict         # name -> rows of floats, shaped like weights
    adam_v: dict
    step: int            # steps done
    num_steps: int       # total steps of the run (the learning-rate schedule)
    learning_rate: float
    seed: int
    val_fraction: float
    rng_state: tuple     # random.getstate()
    data_path: str
    data_sha256: str
    batch_size: int = 1  # documents a step (the torch engine's batches); written only when not 1


# --- to and from JSON ---------------------------------------------------------

def to_dict(ckpt):
    version, state, gauss_next = ckpt.rng_state
    training = {"step": ckpt.step, "num_steps": ckpt.num_steps, "learning_rate": ckpt.learning_rate,
                "seed": ckpt.seed, "val_fraction": ckpt.val_fraction}
    if ckpt.batch_size != 1:
        training["batch_size"] = ckpt.batch_size
    return {
        "format": FORMAT,
        "version": VERSION,
        "written_by": f"microgpt {__version__}",
        "config": ckpt.config.as_dict(),
        "vocab": list(ckpt.chars),
        "training": training,
        "data": {"path": ckpt.data_path, "sha256": ckpt.data_sha256},
        "rng_state": [version, list(state), gauss_next],
        "weights": ckpt.weights,
        "optimizer": {"m": ckpt.adam_m, "v": ckpt.adam_v},
    }


def _format(value, indent=0):
    """JSON with one key per line and one matrix row per line: diffable, still small."""
    pad = " " * indent
    if isinstance(value, dict) and value:
        items = [f"{pad} {json.dumps(k, ensure_ascii=False)}: {_format(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        items = [pad + " " + _format(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8 (os.fsdecode's lone surrogates):
            return json.dumps(value)  # \udcff escapes, which json.loads gives back as they were
    return json.dumps(value, ensure_ascii=False)


def content_sha256(obj):
    """The SHA-256 of a checkpoint object's content: every key but the checksum, in
    the order they come, as compact ASCII JSON (floats by repr). A file's parsed
    object gives the digest its writer computed exactly when no value was changed."""
    content = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    text = json.dumps(content, ensure_ascii=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(obj):
    """obj with its content checksum set (the last key); returns obj."""
    obj.pop(CHECKSUM_KEY, None)
    obj[CHECKSUM_KEY] = content_sha256(obj)
    return obj


def dumps(ckpt):
    return (_format(seal(to_dict(ckpt))) + "\n").encode("utf-8")


def loads(raw, path="checkpoint"):
    if raw[:1] == b"\x80":  # the PROTO opcode every pickle since protocol 2 starts with
        raise CheckpointError(f"{path} is a Python pickle, not a microgpt checkpoint; "
                              f"microgpt never loads pickles (they can run code)")
    if len(raw) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path} is larger than the limit of {MAX_CHECKPOINT_BYTES} bytes for a checkpoint")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not a microgpt checkpoint (not UTF-8 JSON text)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not a valid checkpoint, truncated or corrupt "
                              f"({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise CheckpointError(f"{path} is not a valid checkpoint (JSON nested too deep)") from None
    except ValueError as e:  # an integer too long to convert, say
        raise CheckpointError(f"{path} is not a valid checkpoint ({_first_line(e)})") from None
    try:
        _check_header(obj, path)
        _check_seal(obj, path)
        return from_dict(obj, path)
    except _Bad as e:
        raise CheckpointError(f"{path} is not a valid checkpoint: {e}") from None
    except (RecursionError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a valid checkpoint ({_first_line(e)})") from None


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


class _Bad(Exception):
    pass


def _get(obj, key, kind, where):
    if not isinstance(obj, dict) or key not in obj:
        raise _Bad(f"{where}{key} is missing")
    value = obj[key]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = _finite(value, f"{where}{key}")
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _Bad(f"{where}{key} should be {kind.__name__ if isinstance(kind, type) else kind}, "
                   f"got {type(value).__name__}")
    return value


def _matrices(obj, where):
    if not isinstance(obj, dict):
        raise _Bad(f"{where} should be an object of matrices")
    out = {}
    for name, rows in obj.items():
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise _Bad(f"{where}.{name} should be a list of rows")
        try:
            out[name] = [[_number(x) for x in row] for row in rows]
        except TypeError:
            raise _Bad(f"{where}.{name} holds something that is not a number") from None
        except (ValueError, OverflowError):
            raise _Bad(f"{where}.{name} holds a number that is not finite") from None
    return out


def _number(x):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError
    x = float(x)  # OverflowError for an integer beyond a float
    if not math.isfinite(x):
        raise ValueError
    return x


def _finite(value, what):
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise _Bad(f"{what} should be a finite number, got {value}")
    return value


def _check_header(obj, path):
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a microgpt checkpoint (no \"format\": \"{FORMAT}\")")
    version = obj.get("version")
    if type(version) is not int or (version != VERSION and version not in UNSEALED_VERSIONS):
        readable = ", ".join(str(v) for v in (*UNSEALED_VERSIONS, VERSION))
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; "
                              f"this microgpt reads versions {readable}")


def _check_seal(obj, path):
    """Refuse a file whose content is not what its writer sealed (any edit after the save)."""
    if obj["version"] in UNSEALED_VERSIONS:
        return
    recorded = obj.get(CHECKSUM_KEY)
    if not isinstance(recorded, str):
        raise CheckpointError(f"{path} has no content checksum ({CHECKSUM_KEY}): it was edited "
                              f"after it was saved, and microgpt refuses edited checkpoints")
    actual = content_sha256(obj)
    if recorded != actual:
        raise CheckpointError(f"{path} was changed after it was saved: its content checksum does not "
                              f"match (content SHA-256 {actual[:16]}..., recorded {recorded[:16]}...); "
                              f"microgpt refuses edited checkpoints")


def from_dict(obj, path="checkpoint"):
    """A Checkpoint of a parsed checkpoint object, every field checked (the content
    checksum is loads()' to check: it is a property of the file)."""
    _check_header(obj, path)
    cfg = _get(obj, "config", dict, "")
    if set(cfg) != set(CONFIG_FIELDS):
        raise _Bad(f"config should have the fields {', '.join(CONFIG_FIELDS)}")
    sizes = {k: _get(cfg, k, int, "config.") for k in CONFIG_FIELDS if k != "init_std"}
    if any(v <= 0 for v in sizes.values()):
        raise _Bad("config sizes must be positive")
    problem = size_problem(sizes)
    if problem is not None:
        raise _Bad("config: " + problem.replace("{", "").replace("}", ""))
    config = Config(init_std=_get(cfg, "init_std", float, "config."), **sizes)

    chars = _get(obj, "vocab", list, "")
    if not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
        raise _Bad("vocab should be a list of distinct single characters")
    if config.vocab_size != len(chars) + 1:
        raise _Bad(f"vocab has {len(chars)} characters but config.vocab_size is {config.vocab_size}")

    tr = _get(obj, "training", dict, "")
    step, num_steps = _get(tr, "step", int, "training."), _get(tr, "num_steps", int, "training.")
    if num_steps > MAX_STEPS:
        raise _Bad(f"training.num_steps is above the limit of {MAX_STEPS}")
    if not 0 <= step <= num_steps or num_steps <= 0:
        raise _Bad(f"training.step {step} is not within 0..num_steps {num_steps}")
    learning_rate = _get(tr, "learning_rate", float, "training.")
    if not learning_rate > 0:
        raise _Bad(f"training.learning_rate should be above 0, got {learning_rate}")
    seed = _get(tr, "seed", int, "training.")
    val_fraction = _get(tr, "val_fraction", float, "training.")
    if not 0 <= val_fraction < 1:
        raise _Bad(f"training.val_fraction should be at least 0 and below 1, got {val_fraction}")
    batch_size = _get(tr, "batch_size", int, "training.") if "batch_size" in tr else 1
    if batch_size < 1:
        raise _Bad(f"training.batch_size should be positive, got {batch_size}")

    data = _get(obj, "data", dict, "")
    data_path, data_sha256 = _get(data, "path", str, "data."), _get(data, "sha256", str, "data.")
    if "\0" in data_path or not data_path:
        raise _Bad("data.path should be a non-empty path without NUL characters")

    rng = _get(obj, "rng_state", list, "")
    rng_state = _rng_state(rng)

    weights = _matrices(_get(obj, "weights", dict, ""), "weights")
    opt = _get(obj, "optimizer", dict, "")
    adam_m = _matrices(_get(opt, "m", dict, "optimizer."), "optimizer.m")
    adam_v = _matrices(_get(opt, "v", dict, "optimizer."), "optimizer.v")
    if any(x < 0 for rows in adam_v.values() for row in rows for x in row):
        raise _Bad("optimizer.v holds a negative number (second moments are squares)")
    for what, moments in (("optimizer.m", adam_m), ("optimizer.v", adam_v)):
        if list(moments) != list(weights):
            raise _Bad(f"{what} should hold the same matrices as weights")
        for name, rows in moments.items():
            if [len(r) for r in rows] != [len(r) for r in weights[name]]:
                raise _Bad(f"{what} '{name}' is not shaped like weights '{name}'")
    return Checkpoint(config=config, chars=chars, weights=weights, adam_m=adam_m, adam_v=adam_v,
                      step=step, num_steps=num_steps, learning_rate=learning_rate, seed=seed,
                      val_fraction=val_fraction, rng_state=rng_state, data_path=data_path,
                      data_sha256=data_sha256, batch_size=batch_size)


def _rng_state(rng):
    bad = _Bad("rng_state should be [version, [625 integers], null or a float]")
    if len(rng) != 3 or not isinstance(rng[1], list) or not all(type(x) is int for x in rng[1]):
        raise bad
    words = rng[1]
    if len(words) != 625 or not all(0 <= x < 2 ** 32 for x in words[:624]) or not 0 <= words[624] <= 624:
        raise _Bad("rng_state should hold 624 words of 32 bits and a position from 0 to 624")
    gauss_next = rng[2]
    if gauss_next is not None:
        if isinstance(gauss_next, bool) or not isinstance(gauss_next, (int, float)):
            raise bad
        try:
            gauss_next = float(gauss_next)
        except OverflowError:
            raise bad from None
        if not math.isfinite(gauss_next):  # the next gauss() would return it
            raise _Bad("rng_state's next Gaussian should be null or a finite float")
    state = (rng[0], tuple(rng[1]), gauss_next)
    probe = random.Random()
    try:
        probe.setstate(state)  # checks it now, on a private generator
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    return state



"""The checkpoint file format: a Checkpoint to and from JSON, every field checked.

The format (version 1) is described key by key in the README, section "The
checkpoint format"; ``to_dict`` writes it and ``from_dict`` checks every key.
Floats are written with ``repr`` and read back bit for bit. Loading only parses
JSON: nothing in a file is ever executed, and a pickle is refused by name.
Every file is sealed with a content checksum (``content_sha256``): an edit of
any value after the save is refused before a field is read.
Reading one field of untrusted JSON (a finite number, the matrices, the
generator's state) is ``jsonfields.py``'s job; the model's size limits are
``limits.py``'s; files and run directories are ``rundir.py``'s; moving a
trainer's state in and out of a Checkpoint is ``state.py``'s.
"""
import hashlib
import json
from dataclasses import dataclass

from . import __version__
from .errors import CheckpointError
from .jsonfields import Invalid, field, generator_state, matrices
from .limits import MAX_BATCH_SIZE, MAX_STEPS, size_problem
from .model import Config

FORMAT = "microgpt-checkpoint"
VERSION = 2               # version 2 added the content checksum
UNSEALED_VERSIONS = (1,)  # written before checksums existed: read, checked field by field only
CHECKSUM_KEY = "content_sha256"
CONFIG_FIELDS = ("vocab_size", "n_layer", "n_embd", "block_size", "n_head", "init_std")

MAX_CHECKPOINT_BYTES = 1 << 30  # a checkpoint file larger than this is refused unread


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
    except Invalid as e:
        raise CheckpointError(f"{path} is not a valid checkpoint: {e}") from None
    except (RecursionError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a valid checkpoint ({_first_line(e)})") from None


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


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
    cfg = field(obj, "config", dict)
    if set(cfg) != set(CONFIG_FIELDS):
        raise Invalid(f"config should have the fields {', '.join(CONFIG_FIELDS)}")
    sizes = {k: field(cfg, k, int, "config.") for k in CONFIG_FIELDS if k != "init_std"}
    if any(v <= 0 for v in sizes.values()):
        raise Invalid("config sizes must be positive")
    problem = size_problem(sizes)
    if problem is not None:
        raise Invalid("config: " + problem.replace("{", "").replace("}", ""))
    config = Config(init_std=field(cfg, "init_std", float, "config."), **sizes)

    chars = field(obj, "vocab", list)
    if not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
        raise Invalid("vocab should be a list of distinct single characters")
    if config.vocab_size != len(chars) + 1:
        raise Invalid(f"vocab has {len(chars)} characters but config.vocab_size is {config.vocab_size}")

    tr = field(obj, "training", dict)
    step, num_steps = field(tr, "step", int, "training."), field(tr, "num_steps", int, "training.")
    if num_steps > MAX_STEPS:
        raise Invalid(f"training.num_steps is above the limit of {MAX_STEPS}")
    if not 0 <= step <= num_steps or num_steps <= 0:
        raise Invalid(f"training.step {step} is not within 0..num_steps {num_steps}")
    learning_rate = field(tr, "learning_rate", float, "training.")
    if not learning_rate > 0:
        raise Invalid(f"training.learning_rate should be above 0, got {learning_rate}")
    seed = field(tr, "seed", int, "training.")
    val_fraction = field(tr, "val_fraction", float, "training.")
    if not 0 <= val_fraction < 1:
        raise Invalid(f"training.val_fraction should be at least 0 and below 1, got {val_fraction}")
    batch_size = field(tr, "batch_size", int, "training.") if "batch_size" in tr else 1
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise Invalid(f"training.batch_size should be in 1..{MAX_BATCH_SIZE}, got {batch_size}")

    data = field(obj, "data", dict)
    data_path, data_sha256 = field(data, "path", str, "data."), field(data, "sha256", str, "data.")
    if "\0" in data_path or not data_path:
        raise Invalid("data.path should be a non-empty path without NUL characters")

    rng = field(obj, "rng_state", list)
    rng_state = generator_state(rng)

    weights = matrices(field(obj, "weights", dict), "weights")
    opt = field(obj, "optimizer", dict)
    adam_m = matrices(field(opt, "m", dict, "optimizer."), "optimizer.m")
    adam_v = matrices(field(opt, "v", dict, "optimizer."), "optimizer.v")
    if any(x < 0 for rows in adam_v.values() for row in rows for x in row):
        raise Invalid("optimizer.v holds a negative number (second moments are squares)")
    for what, moments in (("optimizer.m", adam_m), ("optimizer.v", adam_v)):
        if list(moments) != list(weights):
            raise Invalid(f"{what} should hold the same matrices as weights")
        for name, rows in moments.items():
            if [len(r) for r in rows] != [len(r) for r in weights[name]]:
                raise Invalid(f"{what} '{name}' is not shaped like weights '{name}'")
    return Checkpoint(config=config, chars=chars, weights=weights, adam_m=adam_m, adam_v=adam_v,
                      step=step, num_steps=num_steps, learning_rate=learning_rate, seed=seed,
                      val_fraction=val_fraction, rng_state=rng_state, data_path=data_path,
                      data_sha256=data_sha256, batch_size=batch_size)

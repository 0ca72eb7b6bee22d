"""The largest model and run microgpt builds (README, "Limits and failure behaviour").

Every size is checked against these before a single weight is allocated, by
the command line, a run's settings and a checkpoint's config alike: the
model-size rules are stated here once.
"""
from .model import Config, parameter_count

MAX_SIZES = {"n_layer": 256, "n_embd": 4096, "block_size": 4096, "n_head": 4096, "vocab_size": 65536}
MAX_PARAMETERS = 10_000_000
MAX_STEPS = 2 ** 63 - 1  # steps a run may count to (the flag --steps and training.num_steps)
MAX_BATCH_SIZE = 65536  # documents a step (the flag --batch-size and training.batch_size)


def size_problem(sizes):
    """What is wrong with a model's sizes (a dict with some of MAX_SIZES' keys), or None:
    a size above its limit, n_head not dividing n_embd, too many parameters.

    The names in the message are settings, as ``{name}`` (a SettingError template)."""
    for name, limit in MAX_SIZES.items():
        value = sizes.get(name)
        if value is not None and value > limit:
            return f"{{{name}}} {value} is above the limit of {limit}"
    if "n_embd" in sizes and "n_head" in sizes and sizes["n_embd"] % sizes["n_head"]:
        return f"{{n_embd}} {sizes['n_embd']} is not divisible by {{n_head}} {sizes['n_head']}"
    layout_sizes = ("vocab_size", "n_layer", "n_embd", "block_size")
    if all(k in sizes for k in layout_sizes):
        count = parameter_count(Config(**{k: sizes[k] for k in layout_sizes}))
        if count > MAX_PARAMETERS:
            return (f"the model would have {count:,} parameters, above the limit of {MAX_PARAMETERS:,} "
                    f"(lower {{n_embd}}, {{n_layer}} or {{block_size}})")
    return None

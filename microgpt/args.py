"""The command line's grammar: every command's flags, their types and defaults.

``build_parser()`` returns the parser; ``args.command`` names the command that
was given. The flags' value types are argtypes.py's; what the commands do is
cli.py's.
"""
import argparse
import sys

from .argtypes import bounded, fraction, integer, positive_float, positive_int, positive_int_list, temperature
from .engine import CHOICES as ENGINE_CHOICES, ENV_VAR as ENGINE_ENV_VAR
from .errors import UsageError
from .limits import MAX_BATCH_SIZE
from .run import RunSettings
from .torch_options import DEVICES as TORCH_DEVICES, DTYPES as TORCH_DTYPES

DEFAULTS = RunSettings()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every real default; a flag that is off unless given (None, "") says nothing."""

    def _get_help_string(self, action):
        default = action.default
        if default is None or default == "" or isinstance(default, bool):
            return action.help
        if isinstance(default, list):  # a comma list option
            return f"{action.help} (default: {','.join(map(str, default))})"
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):  # the program and every command show their defaults
        super().__init__(*args, formatter_class=HelpFormatter, **kwargs)

    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def _print_message(self, message, file=None):
        # argparse drops a failed write of --help in silence; here it is an OSError
        # (flushed at once), which the command line reports as output it cannot write
        if message:
            file = file if file is not None else sys.stderr
            file.write(message)
            file.flush()


def flag(setting):
    """The flag that sets a run setting: n_embd -> --n-embd."""
    return "--" + setting.replace("_", "-")


# Counts that only make a command run longer, bounded so that a typo cannot ask for
# years of work: samples printed (train, sample), and bench's steps and runs.
MAX_SAMPLES = 1_000_000
MAX_BENCH_STEPS = 1_000_000  # --steps and --warmup each
MAX_BENCH_REPEAT = 1_000
MAX_THREADS = 1024  # torch's threads (--threads): far above any CPU's cores, below where torch crashes


class Given(argparse.Action):
    """Store the value and note that the flag was given (a resumed run refuses changes)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


# ---------------------------------------------------------------- the commands

INPUT_HELP = ("UTF-8 text, one document per line "
              "(default: the names data set, cached in $MICROGPT_CACHE_DIR or ~/.cache/microgpt)")


def add_engine_arg(p):
    p.add_argument("--engine", default=None, metavar="{" + ",".join(ENGINE_CHOICES) + "}",
                   help=f"engine to run (default: ${ENGINE_ENV_VAR}, else auto: replay when the compiled "
                   "extension is built, else pure)")


def add_train(sub):
    t = sub.add_parser("train", help="train on a text file and print samples",
                       description="Train the GPT, one document per step, then print samples.")
    t.add_argument("-i", "--input", metavar="FILE", action=Given, help=INPUT_HELP)
    t.add_argument("--seed", type=integer, default=DEFAULTS.seed, action=Given, help="seed of the one random generator")
    t.add_argument("--n-layer", type=positive_int, default=DEFAULTS.n_layer, action=Given, help="transformer layers")
    t.add_argument("--n-embd", type=positive_int, default=DEFAULTS.n_embd, action=Given, help="embedding width")
    t.add_argument("--block-size", type=positive_int, default=DEFAULTS.block_size, action=Given,
                   help="context length in tokens (longer documents are trained on their first block-size+1)")
    t.add_argument("--n-head", type=positive_int, default=DEFAULTS.n_head, action=Given,
                   help="attention heads (must divide --n-embd)")
    add_engine_arg(t)
    t.add_argument("--steps", type=positive_int, default=DEFAULTS.steps, action=Given,
                   help="training steps (the learning rate decays linearly to 0 at the last)")
    t.add_argument("--learning-rate", type=positive_float, default=DEFAULTS.learning_rate, action=Given,
                   help="Adam learning rate at step 0")
    t.add_argument("--temperature", type=temperature, default=0.5, help="sampling temperature")
    t.add_argument("--num-samples", type=bounded(0, "0 or more", MAX_SAMPLES), default=20,
                   help=f"names to sample after training (at most {MAX_SAMPLES:,})")
    t.add_argument("--log", "--log-file", dest="log", metavar="FILE", help="write one JSON object per step "
                   "(JSON Lines; appended to when resuming); --log-file is the same flag under torchrun, "
                   "whose parser takes --log for its --log-dir")
    t.add_argument("-o", "--out-dir", metavar="DIR", help="write the checkpoint DIR/checkpoint.json at the "
                   "end, every --save-every steps, and on Ctrl-C or SIGTERM (then exit 130)")
    t.add_argument("--save-every", type=positive_int, metavar="N",
                   help="also save the checkpoint after every N steps (needs --out-dir)")
    t.add_argument("--resume", metavar="DIR", help="continue the run whose checkpoint is in DIR, with its "
                   "settings and data (--steps may raise the total); saves back to DIR unless --out-dir")
    t.add_argument("--val-fraction", type=fraction, default=DEFAULTS.val_fraction, action=Given, metavar="F",
                   help="hold out this fraction of the documents (the last ones after the shuffle) "
                   "and report the validation loss at the end")
    t.add_argument("--eval-every", type=positive_int, metavar="N",
                   help="also report the validation loss every N steps (needs --val-fraction)")
    t.set_defaults(given=frozenset())
    add_torch_args(t, train=True)


def add_bench(sub):
    b = sub.add_parser(
        "bench", help="time every engine on the same training steps, side by side",
        description="Run the same training steps on every available engine, each in a fresh process, "
        "and print ms per step (median, min-max), the speedup against pure, forward/backward/optimizer "
        "times, graph nodes per step, bytes per node, peak RSS, and whether the engines' losses agree "
        "exactly. Comma lists for --n-layer, --n-embd and --block-size sweep every combination. "
        "Exit status 1 if exact engines disagree.")
    b.add_argument("-i", "--input", metavar="FILE", help=INPUT_HELP)
    b.add_argument("--seed", type=integer, default=DEFAULTS.seed, help="seed of the one random generator")
    b.add_argument("--steps", type=bounded(1, "positive", MAX_BENCH_STEPS), default=5,
                   help=f"timed training steps per engine (at most {MAX_BENCH_STEPS:,})")
    b.add_argument("--warmup", type=bounded(0, "0 or more", MAX_BENCH_STEPS), default=1,
                   help=f"untimed steps before the timed ones (their losses are compared too; "
                   f"at most {MAX_BENCH_STEPS:,})")
    b.add_argument("--repeat", type=bounded(1, "positive", MAX_BENCH_REPEAT), default=3,
                   help="runs of the same steps per engine, engines taking turns; each step counts "
                   "its fastest run, so a busy moment of the machine does not skew one engine "
                   f"(at most {MAX_BENCH_REPEAT:,})")
    b.add_argument("--n-layer", type=positive_int_list, default=[DEFAULTS.n_layer], metavar="N[,N...]",
                   help="transformer layers (a comma list sweeps)")
    b.add_argument("--n-embd", type=positive_int_list, default=[DEFAULTS.n_embd], metavar="N[,N...]",
                   help="embedding width (a comma list sweeps)")
    b.add_argument("--block-size", type=positive_int_list, default=[DEFAULTS.block_size], metavar="N[,N...]",
                   help="context length in tokens (a comma list sweeps)")
    b.add_argument("--n-head", type=positive_int, default=DEFAULTS.n_head,
                   help="attention heads (must divide every --n-embd)")
    b.add_argument("--engines", default=None, metavar="NAME[,NAME...]",
                   help="engines to run, from " + ", ".join(c for c in ENGINE_CHOICES if c != "auto")
                   + " (default: every engine built here)")
    b.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def add_run_command(sub, name, summary, description):
    """A command that reads a run directory (-o DIR): sample, explain, export."""
    p = sub.add_parser(name, help=summary, description=description)
    p.add_argument("-o", "--out-dir", metavar="DIR", required=True, help="run directory holding checkpoint.json")
    return p


def add_sample(sub):
    s = add_run_command(sub, "sample", "sample from a checkpoint",
                       "Print samples from the model saved by 'microgpt train --out-dir DIR'. "
                       "Without --seed the checkpoint's random generator continues, so sampling a "
                       "finished run prints the samples 'train' printed.")
    s.add_argument("--num-samples", type=bounded(0, "0 or more", MAX_SAMPLES), default=20,
                   help=f"how many samples (at most {MAX_SAMPLES:,})")
    s.add_argument("--temperature", type=temperature, default=0.5, help="sampling temperature")
    s.add_argument("--top-k", type=positive_int, metavar="K", help="sample among the K most likely tokens only")
    s.add_argument("--prompt", metavar="PREFIX", default="", help="start every sample with PREFIX")
    s.add_argument("--seed", type=integer, help="reseed the generator (default: continue the checkpoint's)")
    add_engine_arg(s)
    add_torch_args(s)


def add_plot(sub):
    pl = sub.add_parser("plot", help="draw the loss curve of a --log file",
                        description="Plot the training (and validation) loss from a 'train --log' file. "
                        "Needs matplotlib (pip install \".[plot]\" in a checkout).")
    pl.add_argument("log", metavar="LOG", help="JSON Lines file written by 'microgpt train --log'")
    pl.add_argument("--out", metavar="FILE", default="loss.png",
                    help="image to write; the format follows the extension (png, svg, pdf)")


def add_explain(sub):
    e = add_run_command(sub, "explain", "a trained run on one HTML page: loss, attention, embeddings",
                       "Write one self-contained HTML page (it opens from disk, offline) that "
                       "shows a run saved by 'microgpt train --out-dir DIR' from the inside: the loss curve, "
                       "a name position by position with the next characters' probabilities, every head's "
                       "attention, the embeddings, and the nodes one training step builds. The figures come "
                       "from the model code run on the pure engine.")
    e.add_argument("--log", metavar="FILE", help="the run's 'train --log' file, for the loss curve")
    e.add_argument("--prompt", metavar="NAME", help="the name to follow position by position "
                   "(default: the first sampled name)")
    e.add_argument("--temperature", type=temperature, default=0.5, help="sampling temperature of the names shown")
    e.add_argument("--seed", type=integer, help="reseed the generator (default: continue the checkpoint's)")
    e.add_argument("--bench", metavar="FILE", help="a 'microgpt bench --json' report: each engine's time split")
    e.add_argument("--out", metavar="FILE", help="the page to write (default: DIR/explain.html)")


def add_torch_args(p, train=False):
    """The torch engine's flags (--engine torch; refused with another engine)."""
    g = p.add_argument_group("the torch engine (--engine torch; pip install 'microgpt-arena[torch]')")
    g.add_argument("--device", choices=TORCH_DEVICES, help="where to run: auto is CUDA when present, else the CPU")
    g.add_argument("--dtype", choices=TORCH_DTYPES, help="float64 (the default on the CPU), float32 (the "
                   "default on a GPU), or bfloat16 (autocast over float32 weights)")
    g.add_argument("--threads", type=bounded(1, "positive", MAX_THREADS), metavar="N", help="torch's threads on "
                   f"the CPU (default 1: a step of this small model is many small operations; at most {MAX_THREADS:,})")
    if train:
        g.add_argument("--batch-size", type=bounded(1, "positive", MAX_BATCH_SIZE), default=DEFAULTS.batch_size,
                       action=Given, metavar="B", help="documents a step, the next B in order, padded and masked; "
                       f"the loss is the mean of theirs (1 is the reference; the scalar engines train 1; at most "
                       f"{MAX_BATCH_SIZE:,})")
        g.add_argument("--nproc-per-node", type=positive_int, default=1, metavar="N",
                       help="train in N processes with DistributedDataParallel (gloo on the CPU, NCCL on "
                       "CUDA), each on its share of the batch (--batch-size must divide evenly)")


def add_export(sub):
    e = add_run_command(sub, "export", "write a run's weights as safetensors",
                       "Write the weights of the run in DIR as named tensors (the state dict's "
                       "names and shapes) to a safetensors file, the model's config in its metadata. Needs "
                       "the torch extra (pip install \".[torch]\" in a checkout).")
    e.add_argument("--out", metavar="FILE", required=True, help="the .safetensors file to write")
    e.add_argument("--dtype", choices=TORCH_DTYPES, default="float64",
                   help="the tensors' dtype (float64 holds the checkpoint's weights exactly)")


def build_parser():
    parser = Parser(prog="microgpt", description="Train a tiny GPT on scalar autograd Values.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for add in (add_train, add_bench, add_sample, add_plot, add_explain, add_export):
        add(sub)
    return parser

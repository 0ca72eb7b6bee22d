"""The command line: parse, validate, call, print. No training logic lives here."""
import argparse
import json
import os
import random
import signal
import sys
import time

from . import checkpoint
from . import engine as engines
from .data import NAMES_SHA256, DataError, Tokenizer, load_documents
from .model import Config, init_state_dict, parameters
from .train import Trainer, count_cut_documents, sample, split_documents


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every real default; a flag that is off unless given (None, "") says nothing."""

    def _get_help_string(self, action):
        default = action.default
        if default is None or default == "" or isinstance(default, bool):
            return action.help
        if isinstance(default, list):  # a comma list option
            return f"{action.help} (default: {','.join(map(str, default))})"
        return super()._get_help_string(action)


def whole_number(text, minimum, requirement):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
    return value


def positive_int(text):
    return whole_number(text, 1, "positive")


def non_negative_int(text):
    return whole_number(text, 0, "0 or more")


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


class Given(argparse.Action):
    """Store the value and note that the flag was given (a resumed run refuses changes)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def add_model_args(p):
    p.add_argument("-i", "--input", metavar="FILE", action=Given, help="UTF-8 text, one document per line "
                   "(default: the names data set, cached in $MICROGPT_CACHE_DIR or ~/.cache/microgpt)")
    p.add_argument("--seed", type=int, default=42, action=Given, help="seed of the one random generator")
    p.add_argument("--n-layer", type=positive_int, default=1, action=Given, help="transformer layers")
    p.add_argument("--n-embd", type=positive_int, default=16, action=Given, help="embedding width")
    p.add_argument("--block-size", type=positive_int, default=16, action=Given,
                   help="context length in tokens (longer documents are trained on their first block-size+1)")
    p.add_argument("--n-head", type=positive_int, default=4, action=Given,
                   help="attention heads (must divide --n-embd)")
    p.add_argument("--engine", default=None, metavar="{" + ",".join(engines.CHOICES) + "}",
                   help=f"engine to run (default: ${engines.ENV_VAR}, else auto: compiled when built)")


def build_parser():
    parser = Parser(prog="microgpt", description="Train a tiny GPT on scalar autograd Values.",
                    formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    t = sub.add_parser("train", help="train on a text file and print samples",
                       formatter_class=HelpFormatter,
                       description="Train the GPT, one document per step, then print samples.")
    add_model_args(t)
    t.add_argument("--steps", type=positive_int, default=1000, action=Given,
                   help="training steps (the learning rate decays linearly to 0 at the last)")
    t.add_argument("--learning-rate", type=positive_float, default=0.01, action=Given,
                   help="Adam learning rate at step 0")
    t.add_argument("--temperature", type=positive_float, default=0.5, help="sampling temperature")
    t.add_argument("--num-samples", type=int, default=20, help="names to sample after training")
    t.add_argument("--log", metavar="FILE", help="write one JSON object per step (JSON Lines; "
                   "appended to when resuming)")
    t.add_argument("-o", "--out-dir", metavar="DIR", help="write the checkpoint DIR/checkpoint.json at the "
                   "end, every --save-every steps, and on Ctrl-C or SIGTERM (then exit 130)")
    t.add_argument("--save-every", type=positive_int, metavar="N",
                   help="also save the checkpoint after every N steps (needs --out-dir)")
    t.add_argument("--resume", metavar="DIR", help="continue the run whose checkpoint is in DIR, with its "
                   "settings and data (--steps may raise the total); saves back to DIR unless --out-dir")
    t.add_argument("--val-fraction", type=fraction, default=0.0, action=Given, metavar="F",
                   help="hold out this fraction of the documents (the last ones after the shuffle) "
                   "and report the validation loss at the end")
    t.add_argument("--eval-every", type=positive_int, metavar="N",
                   help="also report the validation loss every N steps (needs --val-fraction)")
    t.set_defaults(func=cmd_train, given=frozenset())

    from .bench import add_parser as add_bench_parser
    add_bench_parser(sub)

    s = sub.add_parser("sample", help="sample from a checkpoint",
                       formatter_class=HelpFormatter,
                       description="Print samples from the model saved by 'microgpt train --out-dir DIR'. "
                       "Without --seed the checkpoint's random generator continues, so sampling a "
                       "finished run prints the samples 'train' printed.")
    s.add_argument("-o", "--out-dir", metavar="DIR", required=True, help="run directory holding checkpoint.json")
    s.add_argument("--num-samples", type=non_negative_int, default=20, help="how many samples")
    s.add_argument("--temperature", type=positive_float, default=0.5, help="sampling temperature")
    s.add_argument("--top-k", type=positive_int, metavar="K", help="sample among the K most likely tokens only")
    s.add_argument("--prompt", metavar="PREFIX", default="", help="start every sample with PREFIX")
    s.add_argument("--seed", type=int, help="reseed the generator (default: continue the checkpoint's)")
    s.add_argument("--engine", default=None, metavar="{" + ",".join(engines.CHOICES) + "}",
                   help=f"engine to run (default: ${engines.ENV_VAR}, else auto: compiled when built)")
    s.set_defaults(func=cmd_sample)

    pl = sub.add_parser("plot", help="draw the loss curve of a --log file",
                        formatter_class=HelpFormatter,
                        description="Plot the training (and validation) loss from a 'train --log' file. "
                        "Needs matplotlib (pip install 'microgpt-arena[plot]').")
    pl.add_argument("log", metavar="LOG", help="JSON Lines file written by 'microgpt train --log'")
    pl.add_argument("--out", metavar="FILE", default="loss.png",
                    help="image to write; the format follows the extension (png, svg, pdf)")
    pl.set_defaults(func=cmd_plot)
    return parser


def resolve_engine(name):
    try:
        eng = engines.get_engine(name)
    except engines.EngineError as e:
        raise UsageError(str(e)) from None
    if engines.requested(name) == "auto" and eng.name == "pure":
        print("microgpt: note: the compiled engine is not built in this installation; "
              "running the pure engine (same results, much slower)", file=sys.stderr)
    return eng


def make_config(args, vocab_size):
    if args.n_embd % args.n_head:
        raise UsageError(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
    return Config(vocab_size=vocab_size, n_layer=args.n_layer, n_embd=args.n_embd,
                  block_size=args.block_size, n_head=args.n_head)


def format_seconds(s):
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The per-step line: the reference's text, then ms/step and the time left."""

    def __init__(self, num_steps, out, log=None):
        self.num_steps, self.out, self.log = num_steps, out, log
        self.tty = out.isatty()
        self.t_start = time.perf_counter()
        self.done_at_start = None
        self.line_open = False  # a progress line ended in \r, waiting to be overwritten

    def end_line(self):
        """Finish an open progress line so that other output starts on a fresh one."""
        if self.line_open:
            print(file=self.out, flush=True)
            self.line_open = False

    def note(self, line, record=None):
        """Print a line between progress lines (and log record, if a log is kept)."""
        self.end_line()
        print(line, file=self.out, flush=self.tty)
        if self.log is not None and record is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def __call__(self, step, loss, lr, dt):
        if self.done_at_start is None:
            self.done_at_start = step - 1
            self.t_start = time.perf_counter() - dt
        if self.log is not None:
            self.log.write(json.dumps({"step": step, "loss": loss, "lr": lr, "dt": dt}) + "\n")
            self.log.flush()
        elapsed = time.perf_counter() - self.t_start
        per_step = elapsed / (step - self.done_at_start)
        eta = per_step * (self.num_steps - step)
        line = (f"step {step:4d} / {self.num_steps:4d} | loss {loss:.4f}"
                f" | {per_step * 1000:7.1f} ms/step | eta {format_seconds(eta)}")
        end = "\r" if self.tty and step < self.num_steps else "\n"
        print(line, end=end, file=self.out, flush=self.tty)
        self.line_open = end == "\r"


class StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM ask the training loop to stop.

    The first signal only sets ``requested``: the step under way finishes, so
    the checkpoint taken next is consistent. A second one raises
    KeyboardInterrupt at once (no save; the last checkpoint on disk stands).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay as they were
                pass
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False


class _Stop(Exception):
    """Raised between two steps once a stop was requested."""


# train flags that define a run: a resumed run takes them from its checkpoint
RUN_SETTINGS = {
    "seed": lambda c: c.seed,
    "n_layer": lambda c: c.config.n_layer,
    "n_embd": lambda c: c.config.n_embd,
    "block_size": lambda c: c.config.block_size,
    "n_head": lambda c: c.config.n_head,
    "learning_rate": lambda c: c.learning_rate,
    "val_fraction": lambda c: c.val_fraction,
}


def resume_settings(args, ckpt):
    """Fill args with the checkpoint's run settings; refuse given flags that differ."""
    for dest, saved in RUN_SETTINGS.items():
        value = saved(ckpt)
        if dest in args.given and getattr(args, dest) != value:
            raise UsageError(f"--{dest.replace('_', '-')} {getattr(args, dest)} differs from the checkpoint's "
                             f"{value}: a resumed run keeps the settings it started with")
        setattr(args, dest, value)
    if "steps" not in args.given:
        args.steps = ckpt.num_steps
    elif args.steps < ckpt.step:
        raise UsageError(f"--steps {args.steps} is fewer than the {ckpt.step} steps the checkpoint has done")


def same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def cmd_train(args):
    if args.num_samples < 0:
        raise UsageError(f"--num-samples must be 0 or more, got {args.num_samples}")
    if args.eval_every and not args.val_fraction and not args.resume:
        raise UsageError("--eval-every needs --val-fraction above 0 (documents to evaluate on)")
    out_dir = args.out_dir or args.resume
    if args.save_every and not out_dir:
        raise UsageError("--save-every needs --out-dir DIR (where to save)")
    eng = resolve_engine(args.engine)

    ckpt = None
    if args.resume:
        ckpt = checkpoint.load(args.resume)
        resume_settings(args, ckpt)
        if args.eval_every and not args.val_fraction:
            raise UsageError("--eval-every needs --val-fraction above 0, and the resumed run holds out nothing")

    random.seed(args.seed)
    input_path = args.input
    if ckpt is not None and input_path is None:
        # the names data set is found (or fetched) again; any other file where it was
        input_path = None if ckpt.data_sha256 == NAMES_SHA256 else ckpt.data_path
    docs, data_path, data_sha256 = load_documents(input_path)
    if ckpt is not None and data_sha256 != ckpt.data_sha256:
        raise checkpoint.CheckpointError(
            f"{data_path} is not the data the checkpoint was trained on (SHA-256 {data_sha256[:16]}..., "
            f"the checkpoint's {ckpt.data_path} had {ckpt.data_sha256[:16]}...)")
    random.shuffle(docs)
    tokenizer = Tokenizer.from_documents(docs)
    if ckpt is not None:
        if tokenizer.chars != ckpt.chars:
            raise checkpoint.CheckpointError("the checkpoint's vocabulary does not match its data file")
        config = ckpt.config
    else:
        config = make_config(args, tokenizer.vocab_size)
    train_docs, val_docs = split_documents(docs, args.val_fraction)
    if not train_docs:
        raise UsageError(f"--val-fraction {args.val_fraction} holds out all {len(docs)} documents: "
                         f"none is left to train on")
    sd = init_state_dict(eng.Value, config)
    if ckpt is not None:
        checkpoint.restore_weights(ckpt, sd)
    trainer = Trainer(eng, sd, config, train_docs, tokenizer, args.steps, args.learning_rate)
    if ckpt is not None:
        checkpoint.restore_optimizer(ckpt, trainer)
        random.setstate(ckpt.rng_state)  # where the interrupted run's generator stood
    if out_dir:
        resuming_here = args.resume is not None and same_path(out_dir, args.resume)
        checkpoint.prepare_run_dir(out_dir, may_hold_checkpoint=resuming_here)

    log = None
    if args.log:
        try:
            log = open(args.log, "a" if ckpt is not None else "w", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write log file {args.log}: {e.strerror or e}") from None
    try:
        return _train_and_sample(args, eng, trainer, val_docs, ckpt, out_dir, log,
                                 len(docs), data_path, data_sha256)
    finally:
        if log is not None:
            log.close()


def _train_and_sample(args, eng, trainer, val_docs, ckpt, out_dir, log, num_docs, data_path, data_sha256):
    sd, config, tokenizer = trainer.sd, trainer.config, trainer.tokenizer
    print(f"engine: {eng.name}")
    print(f"num docs: {num_docs}")
    print(f"vocab size: {tokenizer.vocab_size}")
    print(f"num params: {len(parameters(sd))}")
    if val_docs:
        print(f"held out for validation: {len(val_docs)} docs, training on {len(trainer.docs)}")
    cut = count_cut_documents(trainer.docs, config.block_size)
    if cut:
        print(f"docs longer than the block: {cut} of {len(trainer.docs)}, "
              f"trained on their first {config.block_size + 1} tokens")
    if ckpt is not None:
        print(f"resuming {checkpoint.checkpoint_path(args.resume)} at step {ckpt.step} of {args.steps}")

    def save():
        ckpt_now = checkpoint.capture(trainer, seed=args.seed, val_fraction=args.val_fraction,
                                      data_path=os.path.abspath(data_path), data_sha256=data_sha256)
        return checkpoint.save(ckpt_now, out_dir)

    progress = Progress(args.steps, sys.stdout, log)
    stop = StopSignals()

    def on_step(step, loss, lr, dt):
        progress(step, loss, lr, dt)
        if val_docs and (step == args.steps or (args.eval_every and step % args.eval_every == 0)):
            val_loss = trainer.validation_loss(val_docs)
            progress.note(f"step {step:4d} / {args.steps:4d} | val loss {val_loss:.4f}",
                          {"step": step, "val_loss": val_loss})
        if out_dir and args.save_every and step % args.save_every == 0 and step < args.steps:
            save()
        if stop.requested is not None:
            raise _Stop

    if out_dir is None:
        trainer.run(on_step=on_step)  # Ctrl-C: KeyboardInterrupt, as always
    else:
        try:
            with stop:
                trainer.run(on_step=on_step)
                if stop.requested is not None:
                    raise _Stop
        except _Stop:
            where = save()
            progress.end_line()
            name = "Ctrl-C" if stop.requested == signal.SIGINT else signal.Signals(stop.requested).name
            print(f"microgpt: {name} at step {trainer.step} of {args.steps}: checkpoint saved to {where} "
                  f"(continue with: microgpt train --resume {out_dir})", file=sys.stderr, flush=True)
            return 130
        where = save()  # the generator as training left it: 'sample' repeats what follows

    print("\n--- inference (new, hallucinated names) ---")
    samples = []
    for i in range(args.num_samples):
        samples.append(sample(eng, sd, config, tokenizer, args.temperature))
        print(f"sample {i + 1:2d}: {samples[-1]}", flush=True)
    if log is not None:
        log.write(json.dumps({"samples": samples}) + "\n")
    if out_dir is not None:
        print(f"checkpoint: {where} (step {trainer.step} of {args.steps})")
    return 0


def cmd_sample(args):
    eng = resolve_engine(args.engine)
    ckpt = checkpoint.load(args.out_dir)
    config, tokenizer = ckpt.config, Tokenizer(ckpt.chars)
    prompt = args.prompt
    unknown = list(dict.fromkeys(ch for ch in prompt if ch not in tokenizer.stoi))
    if unknown:
        raise UsageError(f"--prompt has characters outside the model's vocabulary: "
                         f"{', '.join(repr(ch) for ch in unknown)} (vocabulary: {''.join(tokenizer.chars)!r})")
    if len(prompt) > config.block_size - 1:
        raise UsageError(f"--prompt is {len(prompt)} characters; the model's block of {config.block_size} "
                         f"tokens holds at most {config.block_size - 1} after the start token")
    sd = init_state_dict(eng.Value, config)  # the layout; the weights come next
    checkpoint.restore_weights(ckpt, sd)
    if args.seed is not None:
        random.seed(args.seed)
    else:
        random.setstate(ckpt.rng_state)
    for i in range(args.num_samples):
        text = sample(eng, sd, config, tokenizer, args.temperature, top_k=args.top_k, prefix=prompt)
        print(f"sample {i + 1:2d}: {text}", flush=True)
    return 0


def cmd_plot(args):
    from .plot import plot_log
    plot_log(args.log, args.out)
    print(f"wrote {args.out}")
    return 0


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except (UsageError, DataError) as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmicrogpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`microgpt train | head`): stop quietly, and keep
        # Python from failing again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

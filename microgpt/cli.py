"""The command line: parse, validate, call, print. No training logic lives here."""
import argparse
import json
import random
import sys
import time

from . import engine as engines
from .data import DataError, Tokenizer, load_documents
from .model import Config, init_state_dict, parameters
from .train import Trainer, sample


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def add_model_args(p):
    p.add_argument("-i", "--input", metavar="FILE", help="UTF-8 text, one document per line "
                   "(default: the names data set, cached in $MICROGPT_CACHE_DIR or ~/.cache/microgpt)")
    p.add_argument("--seed", type=int, default=42, help="seed of the one random generator")
    p.add_argument("--n-layer", type=positive_int, default=1, help="transformer layers")
    p.add_argument("--n-embd", type=positive_int, default=16, help="embedding width")
    p.add_argument("--block-size", type=positive_int, default=16, help="context length in tokens")
    p.add_argument("--n-head", type=positive_int, default=4, help="attention heads (must divide --n-embd)")
    p.add_argument("--engine", default=None, metavar="{" + ",".join(engines.CHOICES) + "}",
                   help=f"engine to run (default: ${engines.ENV_VAR}, else auto: compiled when built)")


def build_parser():
    parser = Parser(prog="microgpt", description="Train a tiny GPT on scalar autograd Values.",
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    t = sub.add_parser("train", help="train on a text file and print samples",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train the GPT, one document per step, then print samples.")
    add_model_args(t)
    t.add_argument("--steps", type=positive_int, default=1000, help="training steps")
    t.add_argument("--learning-rate", type=positive_float, default=0.01, help="Adam learning rate at step 0")
    t.add_argument("--temperature", type=positive_float, default=0.5, help="sampling temperature")
    t.add_argument("--num-samples", type=int, default=20, help="names to sample after training")
    t.add_argument("--log", metavar="FILE", help="write one JSON object per step (JSON Lines)")
    t.set_defaults(func=cmd_train)
    return parser


def resolve_engine(name):
    try:
        return engines.get_engine(name)
    except engines.EngineError as e:
        raise UsageError(str(e)) from None


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


def cmd_train(args):
    if args.num_samples < 0:
        raise UsageError(f"--num-samples must be 0 or more, got {args.num_samples}")
    eng = resolve_engine(args.engine)
    log = None
    if args.log:
        try:
            log = open(args.log, "w", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write log file {args.log}: {e.strerror or e}") from None
    try:
        random.seed(args.seed)
        docs, _, _ = load_documents(args.input)
        random.shuffle(docs)
        tokenizer = Tokenizer.from_documents(docs)
        config = make_config(args, tokenizer.vocab_size)
        sd = init_state_dict(eng.Value, config)
        print(f"engine: {eng.name}")
        print(f"num docs: {len(docs)}")
        print(f"vocab size: {tokenizer.vocab_size}")
        print(f"num params: {len(parameters(sd))}")

        trainer = Trainer(eng, sd, config, docs, tokenizer, args.steps, args.learning_rate)
        trainer.run(on_step=Progress(args.steps, sys.stdout, log))

        print("\n--- inference (new, hallucinated names) ---")
        samples = []
        for i in range(args.num_samples):
            samples.append(sample(eng, sd, config, tokenizer, args.temperature))
            print(f"sample {i + 1:2d}: {samples[-1]}", flush=True)
        if log is not None:
            log.write(json.dumps({"samples": samples}) + "\n")
    finally:
        if log is not None:
            log.close()
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

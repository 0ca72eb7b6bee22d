"""The command line's value types: each parses one flag's text or says, in one
line, why it cannot (argparse.ArgumentTypeError; a long text is never repeated
whole: errors.shown)."""
import argparse
import sys

from .errors import shown


def integer(text):
    """Any whole number, as int() reads it (a seed)."""
    try:
        return int(text)
    except ValueError:
        digits = text.strip().lstrip("+-").replace("_", "")
        if digits.isdigit():  # int() refuses more digits than sys.get_int_max_str_digits()
            raise argparse.ArgumentTypeError(f"expected at most {sys.get_int_max_str_digits()} digits, "
                                             f"got {shown(text)}") from None
        raise argparse.ArgumentTypeError(f"expected a whole number, got {shown(text, quote=True)}") from None


def whole_number(text, minimum, requirement, maximum=None):
    value = integer(text)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {shown(value)}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {shown(value)}")
    return value


def positive_int(text):
    return whole_number(text, 1, "positive")


def non_negative_int(text):
    return whole_number(text, 0, "0 or more")


def bounded(minimum, requirement, maximum):
    def parse(text):
        return whole_number(text, minimum, requirement, maximum)
    return parse


def positive_int_list(text):
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {shown(text, quote=True)}")
    return list(dict.fromkeys(positive_int(part) for part in parts))  # duplicates run once


def number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shown(text, quote=True)}") from None


def fraction(text):
    value = number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {shown(text)}")
    return value


def positive_float(text):
    value = number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {shown(text)}")
    return value


MIN_TEMPERATURE = 1e-6  # below it, logits divided by the temperature can overflow to inf


def temperature(text):
    value = positive_float(text)
    if value < MIN_TEMPERATURE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_TEMPERATURE:g}, got {shown(text)}")
    return value

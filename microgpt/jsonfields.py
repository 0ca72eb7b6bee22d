"""Values read from JSON that microgpt did not write itself (a checkpoint, a log), each checked.

JSON has one kind of number, of any size; Python reads it as an int or a float,
and true and false as bools, which are ints too. What counts as a number, and
which numbers are finite (an integer beyond the largest float overflows: it is
not), is stated here once. A field that is not what it should be raises
Invalid, whose message names it (``where`` + key, as ``training.step``).
"""
import math
import random

from .errors import shown


class Invalid(Exception):
    """A field of a parsed JSON object that cannot be used; the message says which and why."""


def is_number(value):
    """An int or a float, never a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value):
    """value as a float if it is a number and its float is finite, else None."""
    if not is_number(value):
        return None
    try:
        x = float(value)
    except OverflowError:  # an integer beyond the largest float
        return None
    return x if math.isfinite(x) else None


def field(obj, key, kind, where=""):
    """obj[key], checked to be of kind (dict, list, str, int, or float: a finite number,
    returned as a float)."""
    if not isinstance(obj, dict) or key not in obj:
        raise Invalid(f"{where}{key} is missing")
    value = obj[key]
    if kind is float:
        if is_number(value):
            if finite(value) is None:
                raise Invalid(f"{where}{key} should be a finite number, got {shown(value)}")
            return finite(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, kind):
        return value
    raise Invalid(f"{where}{key} should be {kind.__name__}, got {type(value).__name__}")


def matrices(obj, where):
    """{name: rows of finite floats} from an object of matrices (lists of rows of numbers)."""
    if not isinstance(obj, dict):
        raise Invalid(f"{where} should be an object of matrices")
    out = {}
    for name, rows in obj.items():
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise Invalid(f"{where}.{name} should be a list of rows")
        out[name] = []
        for row in rows:
            floats = [finite(x) for x in row]
            if None in floats:
                bad = row[floats.index(None)]
                raise Invalid(f"{where}.{name} holds " + ("a number that is not finite" if is_number(bad)
                                                           else "something that is not a number"))
            out[name].append(floats)
    return out


def generator_state(rng, where="rng_state"):
    """A random.getstate() from its JSON form [version, [625 integers], null or a float],
    checked on a private generator."""
    bad = Invalid(f"{where} should be [version, [625 integers], null or a float]")
    if len(rng) != 3 or not isinstance(rng[1], list) or not all(type(x) is int for x in rng[1]):
        raise bad
    words = rng[1]
    if len(words) != 625 or not all(0 <= x < 2 ** 32 for x in words[:624]) or not 0 <= words[624] <= 624:
        raise Invalid(f"{where} should hold 624 words of 32 bits and a position from 0 to 624")
    gauss_next = rng[2]
    if gauss_next is not None:
        if not is_number(gauss_next):
            raise bad
        gauss_next = finite(gauss_next)
        if gauss_next is None:  # the next gauss() would return it
            raise Invalid(f"{where}'s next Gaussian should be null or a finite float")
    state = (rng[0], tuple(rng[1]), gauss_next)
    try:
        random.Random().setstate(state)  # checks it now, on a private generator
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    return state

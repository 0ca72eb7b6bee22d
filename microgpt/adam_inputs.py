"""What Adam accepts, in every engine, stated once.

The reference's Adam runs with betas in [0, 1): then beta ** (step + 1) lies in
[0, 1), each bias correction 1 - beta ** (step + 1) in (0, 1], and the second
moment, a weighted sum of squares, is never below zero. Outside that range the
reference's arithmetic fails part-way through a step (beta ** (step + 1)
overflows after the first parameter's moments have changed) or turns complex
(the square root of a negative moment). Every engine refuses such input where
it comes in, before any number changes.
"""
import numbers


def check_betas(beta1, beta2):
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not (isinstance(beta, numbers.Real) and 0 <= beta < 1):
            raise ValueError(f"Adam's {name} must be a number in [0, 1), got {beta!r}")


def check_step(step):
    """step counts from 0; step + 1 must convert to a float (the bias corrections'
    power): raises OverflowError here, before the first parameter's moments move."""
    if step < 0:
        raise ValueError(f"Adam's step counts from 0, got {step!r}")
    float(step + 1)


def check_second_moments(v):
    for i, x in enumerate(v):
        if x < 0:
            raise ValueError(f"Adam's second moments are averages of squares and never negative; "
                             f"entry {i} is {x!r}")

"""The pure-Python engine: the specification.

This is the reference's Value, the statement of what every engine computes:
each operation creates exactly the nodes written below, in that order, with
the same children and local gradients, and backward adds gradients in the
order of its depth-first walk. The compiled engine (``_engine.pyx``) and the
replay (src/tape.c) are tested against this file with ``==``.
"""
import math
import sys
from contextlib import contextmanager

from .adam_inputs import check_betas, check_second_moments, check_step

name = "pure"

# a TypeError, as for any operand that is not a number
MIXED_ENGINES = ("cannot combine a pure-engine Value with a compiled-engine Value: "
                 "take every Value from one engine (microgpt.get_engine(name).Value)")


class Value:
    """A scalar in the computation graph: data, grad, children, local grads."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        if type(data) is not float and type(data) is not int:  # (one test for the usual two)
            _check_number(data)
        self.data = data
        self.grad = 0  # an int, as in the reference: 0 + x is x for every float x
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        other = other if isinstance(other, Value) else _leaf(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else _leaf(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, other):
        if isinstance(other, Value):
            raise TypeError("Value ** Value is not supported: the exponent must be a number")
        if _is_compiled_value(other):
            raise TypeError(MIXED_ENGINES)
        _check_real_pow(self.data, other)
        return Value(self.data ** other, (self,), (other * self.data ** (other - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):
        return Value(math.exp(self.data), (self,), (math.exp(self.data),))

    def relu(self):
        return Value(max(0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    def __float__(self):
        # Not in the reference, whose Value has no float() either: this only words the
        # TypeError. The compiled engine turns a number operand into a double with
        # float(), so a pure Value reaching it (compiled + pure, compiled ** pure,
        # compiled.Value(pure), in every operator and order) is refused here by name.
        raise TypeError("a pure-engine Value is not a number: it cannot be combined with a "
                        "compiled-engine Value (take every Value from one engine), and where "
                        "a number is wanted, use its .data")

    def backward(self):
        """Accumulate d(self)/d(node) into every node's grad, in the reference's order.

        The order is a depth-first post-order from ``self`` that visits children
        in order; gradients flow in its reverse. A stack replaces the reference's
        recursion (which overflows at n_layer=2, n_embd=64) without changing the
        order: a frame is (node, iterator over its children), so a node's scan
        resumes where it left off when the child it descended into is done.
        """
        topo = []
        visited = {self}  # identity: Value defines no __eq__
        stack = [(self, iter(self._children))]
        while stack:
            v, children = stack[-1]
            for child in children:  # resumes where this node's scan stopped
                if child not in visited:
                    if type(child) is not Value:  # a user-defined node over another engine's Value
                        raise TypeError(MIXED_ENGINES)
                    visited.add(child)
                    stack.append((child, iter(child._children)))
                    break
            else:  # every child is done: post-order
                stack.pop()
                topo.append(v)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


def _check_number(data):
    """A Value of the other engine as data would compute on that engine, unseen."""
    if _is_compiled_value(data):
        raise TypeError(MIXED_ENGINES)


def _leaf(number):
    """A number operand as a leaf, as the reference wraps it; a compiled Value is refused
    (a pure Value holding a compiled one would compute on the other engine, unseen)."""
    if _is_compiled_value(number):
        raise TypeError(MIXED_ENGINES)
    return Value(number)


def _is_compiled_value(x):
    compiled = sys.modules.get("microgpt._engine")  # not imported: no compiled Value exists
    return compiled is not None and isinstance(x, compiled.Value)


def _check_real_pow(base, exponent):
    # Python answers a finite negative base with a finite fractional exponent by
    # a complex number; a Value is real, so both engines refuse it the way
    # math.pow does. Infinities and nan keep Python's real answers.
    if (base < 0 and math.isfinite(base) and math.isfinite(exponent)
            and exponent != math.floor(exponent)):
        raise ValueError("math domain error")


@contextmanager
def graph():
    """Scope one graph (a training step, one sample). Python's memory manager
    frees the pure graph once nothing refers to it, so there is nothing to do."""
    yield


class Adam:
    """Adam over a list of Values, with the reference's exact arithmetic."""

    def __init__(self, params, beta1=0.85, beta2=0.99, eps=1e-8):
        check_betas(beta1, beta2)
        self.params = params
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = [0.0] * len(params)  # first moment
        self.v = [0.0] * len(params)  # second moment

    def step(self, lr_t, step):
        """Update every parameter with learning rate lr_t at step (from 0), zero its grad."""
        check_step(step)
        beta1, beta2, eps = self.beta1, self.beta2, self.eps
        m, v = self.m, self.v
        for i, p in enumerate(self.params):
            m[i] = beta1 * m[i] + (1 - beta1) * p.grad
            v[i] = beta2 * v[i] + (1 - beta2) * p.grad ** 2
            m_hat = m[i] / (1 - beta1 ** (step + 1))
            v_hat = v[i] / (1 - beta2 ** (step + 1))
            p.data -= lr_t * m_hat / (v_hat ** 0.5 + eps)
            p.grad = 0

    def get_state(self):
        """(m, v) as lists of floats, in params order (for checkpoints)."""
        return list(self.m), list(self.v)

    def set_state(self, m, v):
        if len(m) != len(self.params) or len(v) != len(self.params):
            raise ValueError(f"optimizer state has {len(m)}/{len(v)} entries for {len(self.params)} params")
        check_second_moments(v)
        self.m, self.v = [float(x) for x in m], [float(x) for x in v]

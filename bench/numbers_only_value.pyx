# A Value written in Cython that computes every number the reference's Value
# computes going forward, and keeps no graph: each operation makes a new Value
# holding its result (a double), backward does nothing, and .grad reads as one
# fixed float whatever the script writes, so that the script's Adam loop does
# its arithmetic on a real gradient, as it does with a Value that has one.
# bench_reference_script.py swaps it into the reference script (numbers-c) beside
# the do-nothing class (do_nothing_value.pyx): the step's cost for the forward's
# arithmetic and objects and for Adam's arithmetic, without a graph or a
# backward, which is what the compiled Value adds over it.
# Built at benchmark time with pyximport; never part of the package.
cimport cython
from libc.math cimport exp, log, pow

GRAD = 0.0123  # what .grad reads as: a float, as a backward would leave it


cdef inline double number(object x) except? -1.0:
    return (<Value>x).data if type(x) is Value else <double>x


cdef inline Value made(double x):
    cdef Value v = Value.__new__(Value)
    v.data = x
    return v


@cython.freelist(8192)
cdef class Value:
    cdef public double data

    def __init__(self, data, children=(), local_grads=()):
        self.data = data

    @property
    def grad(self):
        return GRAD

    @grad.setter
    def grad(self, value):
        pass

    # the reference's operations, each a new Value, its number computed as
    # the reference's composition computes it (self - other: self + (-other))
    def __add__(self, other):
        return made(self.data + number(other))

    def __radd__(self, other):
        return made(self.data + number(other))

    def __mul__(self, other):
        return made(self.data * number(other))

    def __rmul__(self, other):
        return made(self.data * number(other))

    def __sub__(self, other):
        return made(self.data + -number(other))

    def __rsub__(self, other):
        return made(number(other) + -self.data)

    def __truediv__(self, other):
        return made(self.data * pow(number(other), -1.0))

    def __rtruediv__(self, other):
        return made(number(other) * pow(self.data, -1.0))

    def __pow__(self, k, modulo):
        return made(pow(self.data, <double>k))

    def __neg__(self):
        return made(self.data * -1.0)

    def log(self):
        return made(log(self.data))

    def exp(self):
        return made(exp(self.data))

    def relu(self):
        return made(self.data if self.data > 0 else 0.0)

    def backward(self):
        pass

# A Value written in Cython whose every operation does nothing: it keeps no graph,
# computes nothing and returns itself. bench_reference_script.py swaps it into the
# reference script to measure the floor that any Value class implemented in C pays
# for that script: the script's own Python (generators, zips, the Adam loop over
# .data/.grad) plus one C-level operator dispatch per operation.
# Built at benchmark time with pyximport; never part of the package.

cdef class Value:
    cdef public object data
    cdef public object grad

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0

    def __add__(self, other):
        return self

    def __radd__(self, other):
        return self

    def __mul__(self, other):
        return self

    def __rmul__(self, other):
        return self

    def __sub__(self, other):
        return self

    def __rsub__(self, other):
        return self

    def __truediv__(self, other):
        return self

    def __rtruediv__(self, other):
        return self

    def __pow__(self, k, modulo):
        return self

    def __neg__(self):
        return self

    def log(self):
        return self

    def exp(self):
        return self

    def relu(self):
        return self

    def backward(self):
        pass

"""The compiled engine: the Value graph in a C arena (src/arena.h).

Glue only. A ``Value`` here is a small handle (arena, index, epoch) into
contiguous columns; each operation appends exactly the nodes the pure engine
(_pure.py, the specification) creates, with the same children in the same
order and the same IEEE arithmetic, so both engines build the same graph and
compute the same floats. Backward and Adam run in C over the columns.

Handles are not tracked by Python's cyclic garbage collector (they cannot form
cycles: an Arena refers to no Value), so a step's 60,000 temporaries cost no
collection passes. A graph scope (``graph()``) releases the nodes made inside
it; a handle to a released node raises StaleValueError on any use.
"""
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.stdlib cimport malloc, free
from libc.math cimport log, exp, isfinite, isinf
from array import array

cdef extern from *:
    """
    #ifndef MICROGPT_CHECKED
    #define MICROGPT_CHECKED 0
    #endif
    """
    int MICROGPT_CHECKED

name = "compiled"
exact = True  # same floats as the pure engine, bit for bit
checked = bool(MICROGPT_CHECKED)  # built with MICROGPT_BOUNDSCHECK=1: Cython checks and C asserts

OP_NAMES = ("leaf", "const", "add", "mul", "pow", "log", "exp", "relu")


class StaleValueError(RuntimeError):
    """A Value whose graph was released (its node no longer exists)."""


class ArenaMismatchError(ValueError):
    """An operation combined Values that live in two different arenas."""


# ---------------------------------------------------------------- helpers

cdef inline bint alive(Value v) noexcept:
    """Whether v's node still exists (not released, not reused). A handle made
    by Value.__new__ without __init__ has no arena and is never alive."""
    if <object>v.arena is None:
        return False
    cdef arena_t *a = &v.arena.a
    return v.index < a.n_nodes and a.epoch[v.index] == v.epoch


cdef int raise_stale(Value v) except -1:
    if <object>v.arena is None:
        raise StaleValueError("this Value was never initialised (made by Value.__new__ without __init__)")
    raise StaleValueError(
        "this Value belongs to a graph that was released (its graph() scope ended); "
        "read .data inside the scope, or create it outside")


cdef inline int check(Value v) except -1:
    if not alive(v):
        raise_stale(v)
    return 0


cdef int raise_nomem() except -1:
    raise MemoryError("the arena could not grow (out of memory or more than 2**31 nodes)")


cdef inline Value make(Arena arena, node_t i):
    """A new handle for node i (just appended)."""
    if i < 0:
        raise_nomem()
    cdef Value h = Value.__new__(Value)
    h.arena = arena
    h.index = i
    h.epoch = arena.a.cur_epoch
    return h


cdef int raise_status(status_t s) except -1:
    if s == ARENA_ZERODIV:
        raise ZeroDivisionError("0.0 cannot be raised to a negative power")
    if s == ARENA_DOMAIN:
        raise ValueError("math domain error")
    if s == ARENA_RANGE:
        raise OverflowError("math range error")
    raise MemoryError("the arena could not grow")


# bytes a node and an edge take in the columns of src/arena.h
cdef size_t NODE_BYTES = (3 * sizeof(double)     # data, grad, operand
                          + sizeof(uint8_t)       # op
                          + sizeof(epoch_t)       # epoch
                          + sizeof(uint32_t)      # visit (backward scratch)
                          + sizeof(int64_t)       # child_start
                          + sizeof(node_t)        # topo (backward scratch)
                          + sizeof(node_t) + sizeof(int64_t))  # DFS stack (backward scratch)
cdef size_t EDGE_BYTES = sizeof(node_t) + sizeof(double)  # child, local_grad


# ---------------------------------------------------------------- Arena

@cython.auto_pickle(False)
cdef class Arena:
    """Owns the columns of one graph store; grows by doubling, frees on collection.

    Nodes made inside ``with arena.graph():`` are released when it ends.
    """

    def __cinit__(self):
        if arena_init(&self.a) != 0:
            raise MemoryError("cannot allocate an arena")

    def __dealloc__(self):
        arena_free(&self.a)

    def value(self, data):
        """A new leaf Value in this arena."""
        return make(self, arena_leaf(&self.a, OP_LEAF, <double>data))

    def __len__(self):
        return self.a.n_nodes

    @property
    def num_edges(self):
        return self.a.n_edges

    def mark(self):
        """The current size; release(mark) drops every node made after it."""
        return self.a.n_nodes

    def release(self, int64_t mark):
        if mark < 0 or mark > self.a.n_nodes:
            raise ValueError(f"mark {mark} is outside the arena (0..{self.a.n_nodes})")
        arena_release(&self.a, mark)

    def replay(self, int64_t start=0):
        """Recompute every node from index start on, in creation order, from its
        op, constant operand and children, after new values were written into
        leaves (``v.data = x``); grads of those nodes are reset to 0.

        This is the forward half of replaying a recorded graph: the same nodes
        in the same order give the same floats as building the graph again,
        provided no constant was derived from data when it was recorded (the
        softmax maximum is: a replay of a GPT step keeps the recorded one).
        """
        if start < 0 or start > self.a.n_nodes:
            raise ValueError(f"start {start} is outside the arena (0..{self.a.n_nodes})")
        cdef status_t s = arena_replay(&self.a, start)
        if s != ARENA_OK:
            raise_status(s)

    def graph(self):
        """A context manager: nodes made inside it are released on exit."""
        return GraphScope(self)

    @property
    def bytes_per_node(self):
        """Bytes the columns take for one node: node columns, backward scratch,
        and the edges averaged over the nodes in use."""
        if self.a.n_nodes == 0:
            return float(NODE_BYTES)
        return NODE_BYTES + EDGE_BYTES * self.a.n_edges / <double>self.a.n_nodes

    @property
    def nbytes(self):
        """Bytes allocated for the columns now (capacity, not use)."""
        return int(self.a.cap_nodes * NODE_BYTES + self.a.cap_edges * EDGE_BYTES)

    def column(self, name):
        """A copy of one column for inspection, as an array.array (numpy.asarray
        wraps it without copying). A copy, because growing the arena moves the
        columns: a live view could outlive its memory."""
        cdef int64_t i, n = self.a.n_nodes, e = self.a.n_edges
        cdef arena_t *a = &self.a
        if name == "data":
            return array("d", [a.data[i] for i in range(n)])
        if name == "grad":
            return array("d", [a.grad[i] for i in range(n)])
        if name == "operand":
            return array("d", [a.operand[i] for i in range(n)])
        if name == "op":
            return array("B", [a.op[i] for i in range(n)])
        if name == "child_start":
            return array("q", [a.child_start[i] for i in range(n + 1)])
        if name == "child":
            return array("i", [a.child[i] for i in range(e)])
        if name == "local_grad":
            return array("d", [a.local_grad[i] for i in range(e)])
        raise KeyError(f"no column {name!r}: data, grad, operand, op, child_start, child, local_grad")


@cython.auto_pickle(False)
cdef class GraphScope:
    """``with scope:`` releases every node made inside it on exit.

    Scopes of one arena nest: each must close before the one opened before it
    (a ``with`` statement does that), else releasing could drop nodes made
    after an enclosing scope closed.
    """
    cdef Arena arena
    cdef int64_t mark
    cdef int64_t depth      # how many scopes of the arena were open when this one opened

    def __cinit__(self, Arena arena not None):
        self.arena = arena
        self.mark = -1

    def __enter__(self):
        if self.mark >= 0:
            raise RuntimeError("this graph scope is already open")
        self.mark = self.arena.a.n_nodes
        self.depth = self.arena.open_scopes
        self.arena.open_scopes += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.mark < 0:
            return False
        if self.arena.open_scopes != self.depth + 1:
            raise RuntimeError("graph scopes must close in the reverse order they were opened")
        arena_release(&self.arena.a, self.mark)
        self.arena.open_scopes -= 1
        self.mark = -1
        return False


# ---------------------------------------------------------------- the operations

cdef Value binary(uint8_t op, Value x, object y):
    """x + y (OP_ADD, local grads (1, 1)) or x * y (OP_MUL, local grads (y, x)).

    A number y becomes an OP_CONST leaf just before the node, as the pure engine
    wraps it. Its conversion (which may run Python code) comes first, then the
    checks, then the appends: nothing is appended for an operation that raises,
    and nothing can be released between the checks and the appends.
    """
    cdef Value o = None
    cdef double c = 0.0
    if type(y) is Value:
        o = <Value>y
    else:
        c = <double>y
    check(x)
    cdef node_t j
    if o is not None:
        if o.arena is not x.arena:
            raise ArenaMismatchError("cannot combine Values from two different arenas")
        check(o)
        j = o.index
    else:
        j = arena_leaf(&x.arena.a, OP_CONST, c)
        if j < 0:
            raise_nomem()
    cdef double *d = x.arena.a.data
    cdef double u = d[x.index], w = d[j]
    if op == OP_ADD:
        return make(x.arena, arena_binary(&x.arena.a, OP_ADD, u + w, x.index, 1.0, j, 1.0))
    return make(x.arena, arena_binary(&x.arena.a, OP_MUL, u * w, x.index, w, j, u))


cdef Value power(Value x, object k):
    """x ** k for a number k: one OP_POW node, local grad k * x ** (k - 1)."""
    cdef double kd = <double>k, km1 = <double>(k - 1)  # Python code first, then the check
    check(x)
    cdef double u = x.arena.a.data[x.index], out, lg
    cdef status_t s = arena_pow(u, kd, &out)
    if s == ARENA_OK:
        s = arena_pow(u, km1, &lg)
    if s != ARENA_OK:
        raise_status(s)
    return make(x.arena, arena_unary(&x.arena.a, OP_POW, out, kd, x.index, kd * lg))


# ---------------------------------------------------------------- Value

@cython.final  # a subclass would get CPython's generic operator slots, which reorder operands
@cython.no_gc
@cython.freelist(4096)
@cython.auto_pickle(False)
cdef class Value:
    """A scalar in the graph: a handle (arena, index) with the pure Value's API."""

    def __init__(self, data):
        cdef Arena arena = _default_arena
        cdef node_t i = arena_leaf(&arena.a, OP_LEAF, <double>data)
        if i < 0:
            raise MemoryError("the arena could not grow")
        self.arena = arena
        self.index = i
        self.epoch = arena.a.cur_epoch

    # -- the two columns users read and write

    @property
    def data(self):
        check(self)
        return self.arena.a.data[self.index]

    @data.setter
    def data(self, double x):
        check(self)
        self.arena.a.data[self.index] = x

    @property
    def grad(self):
        check(self)
        return self.arena.a.grad[self.index]

    @grad.setter
    def grad(self, double g):
        check(self)
        self.arena.a.grad[self.index] = g

    # -- the operations of ALGORITHM.md section 2, computed in C

    def __add__(Value self, other):
        return binary(OP_ADD, self, other)

    def __mul__(Value self, other):
        return binary(OP_MUL, self, other)

    def __pow__(Value self, other, modulo):
        if isinstance(other, Value):
            raise TypeError("Value ** Value is not supported: the exponent must be a number")
        if modulo is not None:
            raise TypeError("pow() with a modulus is not supported for Value")
        return power(self, other)

    def log(self):
        check(self)
        cdef double x = self.arena.a.data[self.index]
        if x <= 0.0:
            raise ValueError("math domain error")
        return make(self.arena, arena_unary(&self.arena.a, OP_LOG, log(x), 0.0, self.index, 1.0 / x))

    def exp(self):
        check(self)
        cdef double x = self.arena.a.data[self.index]
        cdef double y = exp(x)
        if isinf(y) and isfinite(x):
            raise OverflowError("math range error")
        return make(self.arena, arena_unary(&self.arena.a, OP_EXP, y, 0.0, self.index, y))

    def relu(self):
        check(self)
        cdef double x = self.arena.a.data[self.index]
        return make(self.arena, arena_unary(&self.arena.a, OP_RELU, x if x > 0 else 0.0, 0.0,
                                            self.index, 1.0 if x > 0 else 0.0))

    # -- the rest are compositions, written exactly as in the pure engine

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

    def backward(self):
        """Accumulate gradients from this node, in the reference's order (see arena_backward)."""
        check(self)
        if arena_backward(&self.arena.a, self.index) < 0:
            raise MemoryError("backward ran out of memory")

    def backward_by_index(self):
        """Backward over every index from this node down to 0, in reverse
        creation order: NOT the reference's order (gradients differ in the last
        bits), and nodes this one does not depend on pass their gradients on
        too. Kept only to measure what the exact order costs."""
        check(self)
        arena_backward_by_index(&self.arena.a, self.index)

    # -- inspection

    @property
    def op(self):
        check(self)
        return OP_NAMES[self.arena.a.op[self.index]]

    @property
    def node(self):
        """This node's index in its arena."""
        check(self)
        return self.index

    @property
    def _children(self):
        check(self)
        cdef arena_t *a = &self.arena.a
        cdef int64_t e
        return tuple(make_existing(self.arena, a.child[e])
                     for e in range(a.child_start[self.index], a.child_start[self.index + 1]))

    @property
    def _local_grads(self):
        check(self)
        cdef arena_t *a = &self.arena.a
        cdef int64_t e
        return tuple(a.local_grad[e]
                     for e in range(a.child_start[self.index], a.child_start[self.index + 1]))

    def __repr__(self):
        if not alive(self):
            return "Value(<released>)"
        return f"Value(data={self.arena.a.data[self.index]}, grad={self.arena.a.grad[self.index]})"


cdef Value make_existing(Arena arena, node_t i):
    """A handle to an existing node (its epoch is the node's own)."""
    cdef Value h = Value.__new__(Value)
    h.arena = arena
    h.index = i
    h.epoch = arena.a.epoch[i]
    return h


# ---------------------------------------------------------------- Adam

@cython.auto_pickle(False)
cdef class Adam:
    """Adam over parameter Values of one arena, with the reference's arithmetic, in C."""
    cdef Arena arena
    cdef node_t *idx           # (n,) node index of each parameter
    cdef epoch_t *epochs       # (n,) epoch of each, to refuse released parameters
    cdef double *m             # (n,) first moment
    cdef double *v             # (n,) second moment
    cdef int64_t n
    cdef readonly list params
    cdef readonly double beta1, beta2, eps

    def __cinit__(self, params, double beta1=0.85, double beta2=0.99, double eps=1e-8):
        self.params = list(params)
        self.n = len(self.params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.idx = <node_t *>malloc(max(self.n, 1) * sizeof(node_t))
        self.epochs = <epoch_t *>malloc(max(self.n, 1) * sizeof(epoch_t))
        self.m = <double *>malloc(max(self.n, 1) * sizeof(double))
        self.v = <double *>malloc(max(self.n, 1) * sizeof(double))
        if not (self.idx and self.epochs and self.m and self.v):
            raise MemoryError()
        cdef int64_t i
        cdef Value p
        for i in range(self.n):
            if not isinstance(self.params[i], Value):
                raise TypeError(f"Adam needs compiled-engine Values, got {type(self.params[i]).__name__}")
            p = <Value>self.params[i]
            check(p)
            if self.arena is None:
                self.arena = p.arena
            elif p.arena is not self.arena:
                raise ArenaMismatchError("Adam's parameters must all live in one arena")
            self.idx[i] = p.index
            self.epochs[i] = p.epoch
            self.m[i] = 0.0
            self.v[i] = 0.0

    def __dealloc__(self):
        free(self.idx)
        free(self.epochs)
        free(self.m)
        free(self.v)

    def step(self, double lr_t, int64_t step):
        """Update every parameter with learning rate lr_t at step (from 0), zero its grad."""
        if self.n == 0:
            return
        cdef arena_t *a = &self.arena.a
        cdef int64_t i
        for i in range(self.n):
            if self.idx[i] >= a.n_nodes or a.epoch[self.idx[i]] != self.epochs[i]:
                raise StaleValueError("a parameter's node was released; create parameters "
                                      "outside any graph() scope")
        cdef status_t s
        arena_adam(a, self.idx, self.n, self.m, self.v, lr_t, self.beta1, self.beta2, self.eps, step, &s)
        if s == ARENA_ZERODIV:
            raise ZeroDivisionError("float division by zero")
        if s != ARENA_OK:
            raise_status(s)

    def get_state(self):
        """(m, v) as lists of floats, in params order (for checkpoints)."""
        cdef int64_t i
        return [self.m[i] for i in range(self.n)], [self.v[i] for i in range(self.n)]

    def set_state(self, m, v):
        if len(m) != self.n or len(v) != self.n:
            raise ValueError(f"optimizer state has {len(m)}/{len(v)} entries for {self.n} params")
        cdef int64_t i
        for i in range(self.n):
            self.m[i] = m[i]
            self.v[i] = v[i]


# ---------------------------------------------------------------- the module's engine API

cdef Arena _default_arena = Arena()


def default_arena():
    """The arena that Value(x) and graph() use."""
    return _default_arena


def graph():
    """Scope one graph in the default arena: its nodes are released on exit."""
    return GraphScope(_default_arena)

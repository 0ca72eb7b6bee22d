# The operations and the Value handle: one job, the reference's Value surface
# over the arena (~360 lines because that surface is large: operators,
# user-defined nodes, ints, copies, identity, inspection). Each operation
# appends exactly the nodes the pure engine (_pure.py) creates; its arithmetic
# is src/ops.h, the same C a replay runs. Included by _engine.pyx.

from libc.math cimport isfinite
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsDouble

cdef inline void spoil(Arena arena, str why) noexcept:
    """While a step is recorded, note what makes the recording unreplayable."""
    if arena.recording and arena.spoiled is None:
        arena.spoiled = why


cdef inline Value binary(int op, Value x, object y):
    """x + y (OP_ADD, local grads (1, 1)) or x * y (OP_MUL, local grads (y, x)).

    A number y becomes an OP_CONST leaf just before the node, as the pure engine
    wraps it. Its conversion (which may run Python code) comes first, then the
    checks, then the appends: nothing is appended for an operation that raises,
    and nothing can be released between the checks and the appends.
    """
    # x holds a reference to its arena for the whole call: the arena is read
    # through x (no reference of its own to take and drop), its columns through a
    cdef arena_t *a
    cdef node_t j
    cdef double c
    if type(y) is Value:
        check(x)
        if (<Value>y).arena is not x.arena:
            raise ArenaMismatchError("cannot combine Values from two different arenas")
        a = &x.arena.a
        if not alive_in(<Value>y, a):
            raise_stale(<Value>y)
        if not has_room(a, 1, 2):
            make_room_when_full(x.arena, 1, 2)  # may move nodes: indices are read after it
        j = (<Value>y).index
    else:
        c = <double>y
        check(x)
        a = &x.arena.a
        if not has_room(a, 2, 2):
            make_room_when_full(x.arena, 2, 2)
        j = arena_push_const(a, c, isinstance(y, int))
        if x.arena.recording and type(y) is DerivedNumber:
            note_derived(x.arena, j, y)
    cdef Value h = fresh_handle()  # first: nothing may fail between the append and noting h
    cdef node_t i = arena_push_binary(a, op, x.index, j)
    if i < 0:  # int op int beyond a double's range: nothing appended
        int_overflow(x.arena, -1 if type(y) is Value else j)
    h.arena = x.arena
    h.index = i
    h.epoch = a.cur_epoch
    a.held[i] = <void *>h  # remember(), without the arena object
    return h


cdef int int_overflow(Arena arena, node_t const) except -1:
    """Two ints whose exact sum or product a double cannot hold (the pure engine
    keeps Python's int): refused as float() refuses such an int, rather than
    carried on as an int that is infinite. const: the constant just appended, or -1."""
    if const >= 0:
        arena_release(&arena.a, const)  # the operation appends nothing
    raise OverflowError("int too large to convert to float (the compiled engine holds "
                        "numbers as doubles)")


cdef Value power(Value x, object k):
    """x ** k for a number k: one OP_POW node, local grad k * x ** (k - 1), with
    k - 1 computed on k as Python computes it (exactly, for an int)."""
    cdef double kd = <double>k, km1 = <double>(k - 1)  # Python code first, then the check
    cdef bint k_int = isinstance(k, int)
    check(x)
    if type(k) is DerivedNumber:
        spoil(x.arena, "a number derived from data was used as an exponent")
    cdef double out, lg
    cdef status_t s = op_pow(x.arena.a.data[x.index], kd, km1, &out, &lg)
    if s != OP_OK:
        raise_status(s)
    make_room(x.arena, 1, 1)  # may move nodes: x.index is read after it
    # a replay recomputes k - 1 from the double k; where that is not Python's
    # k - 1 (an int beyond 2**53), the node keeps its computed local grad
    cdef uint8_t op = OP_POW if km1 == kd - 1.0 else OP_CUSTOM
    return make_tagged(x.arena, arena_node(&x.arena.a, op, out, kd, 1, &x.index, &lg), OP_POW, k_int)


cdef inline Value make_tagged(Arena arena, node_t i, int op, int k_int):
    """A handle for node i (just appended by op), its int tags set as the pure
    engine's types come out (src/arena.h arena_tag)."""
    if i >= 0:
        arena_tag(&arena.a, i, op, k_int)
    return make(arena, i)


cdef inline void set_int_tag(arena_t *a, node_t i, uint8_t bit, object number) noexcept:
    """Tag bit of node i says whether the number written there is a Python int."""
    if isinstance(number, int):
        a.tag[i] |= bit
    else:
        a.tag[i] &= ~bit


cdef inline double as_double(object number) except? -1.0:
    """float(number) as a double: a float or an int read directly (an Adam loop
    writes one of each per parameter: .data -= ..., .grad = 0), anything else
    through its __float__ (which may raise)."""
    if type(number) is float:
        return PyFloat_AS_DOUBLE(number)
    if type(number) is int:
        return PyLong_AsDouble(number)  # what float(int) runs: OverflowError beyond a double
    return <double>number


cdef inline object present(double x, bint is_int):
    """A number as the pure engine holds it: an int where its tag says so (a
    grad summed beyond a double's range is inf: no int can say that)."""
    return int(x) if is_int and isfinite(x) else x


cdef Value unary(Value x, status_t (*f)(double, double *, double *) noexcept nogil, uint8_t op):
    """log, exp or relu of x: one node, computed by f (src/ops.h)."""
    check(x)
    cdef double out, lg
    cdef status_t s = f(x.arena.a.data[x.index], &out, &lg)
    if s != OP_OK:
        raise_status(s)
    make_room(x.arena, 1, 1)  # may move nodes: x.index is read after it
    return make_tagged(x.arena, arena_node(&x.arena.a, op, out, 0.0, 1, &x.index, &lg), op, 0)


@cython.final  # a subclass would get CPython's generic operator slots, which reorder operands
@cython.no_gc  # its dealloc and freelist: _handles.pxi
@cython.auto_pickle(False)
cdef class Value:
    """A scalar in the graph: a handle (arena, index) with the pure Value's API."""

    def __init__(self, data, children=(), local_grads=()):
        """Value(x): a leaf in the default arena. Value(x, children, local_grads): a
        user-defined operation, as the reference's class allows: a node (op "custom")
        over the given Values of one arena, with the given local gradients d(node)/d(child),
        which backward uses. A recording that meets one runs the model code instead."""
        cdef Arena arena = _default_arena
        cdef double x = <double>data
        if type(data) is DerivedNumber:
            spoil(arena, "a number derived from data became a new Value")
        cdef node_t i
        # one snapshot of each: user code (a __float__, __iter__ or __len__) may
        # change the given sequences while they are read; tuples cannot change
        if type(children) is not tuple:
            children = tuple(children)
        if type(local_grads) is not tuple:
            local_grads = tuple(local_grads)
        if len(children) == 0 and len(local_grads) == 0:
            make_room(arena, 1, 0)
            i = arena_leaf(&arena.a, OP_LEAF, x)
        else:
            arena = custom_arena(children, local_grads)
            i = custom_node(arena, x, children, local_grads)
        if i < 0:
            raise_nomem()
        set_int_tag(&arena.a, i, TAG_DATA_INT, data)
        if self.arena is not None:  # __init__ called again on a live handle: it moves to the new node
            self.arena.moves += 1
        forget(self)
        # the old arena's reference goes last, once the new node is noted as held: its
        # last reference going may run Python code (a subclass's __del__) that drops
        # or reclaims the unheld nodes on top of the default arena, the new one among them
        cdef Arena old = self.arena
        self.arena = arena
        self.index = i
        self.epoch = arena.a.cur_epoch
        remember(arena, i, self)
        del old

    # -- the two columns users read and write (a recording cannot follow a
    #    number out of the graph: reading or writing one while recording spoils it;
    #    the arena is read through self, no reference of its own taken for a call)

    @property
    def data(self):
        check(self)
        if self.arena.recording:
            spoil(self.arena, "a .data was read while recording (declare it: model.max_data)")
        return present(self.arena.a.data[self.index], self.arena.a.tag[self.index] & TAG_DATA_INT)

    @data.setter
    def data(self, value):
        cdef double x = as_double(value)
        check(self)
        if self.arena.recording:
            spoil(self.arena, "a .data was written while recording")
        self.arena.a.data[self.index] = x
        set_int_tag(&self.arena.a, self.index, TAG_DATA_INT, value)

    @property
    def grad(self):
        check(self)
        if self.arena.recording:
            spoil(self.arena, "a .grad was read while recording")
        return present(self.arena.a.grad[self.index], self.arena.a.tag[self.index] & TAG_GRAD_INT)

    @grad.setter
    def grad(self, value):
        cdef double g = as_double(value)
        check(self)
        if self.arena.recording:
            spoil(self.arena, "a .grad was written while recording")
        self.arena.a.grad[self.index] = g
        set_int_tag(&self.arena.a, self.index, TAG_GRAD_INT, value)

    @staticmethod
    def max_data(values):
        """max(v.data for v in values), a plain float. While a step is recorded
        it is a DerivedNumber: a replay recomputes it from the same nodes."""
        cdef Value v, first = None
        cdef double m = 0.0, x
        cdef list nodes = []
        for item in values:
            if type(item) is not Value:
                raise TypeError(f"max_data needs compiled-engine Values, got {type(item).__name__}")
            v = <Value>item
            check(v)
            if first is None:
                first, m = v, v.arena.a.data[v.index]
            elif v.arena is not first.arena:
                raise ArenaMismatchError("cannot combine Values from two different arenas")
            else:
                x = v.arena.a.data[v.index]
                if x > m:  # as Python's max: a later item replaces only a smaller one
                    m = x
            nodes.append(v.index)
        if first is None:
            raise ValueError("max_data() of no Values")
        if first.arena.recording:
            return DerivedNumber(m, first.arena, tuple(nodes), 1.0)
        return m

    @staticmethod
    def dot(w, x):
        """sum(wi * xi for wi, xi in zip(w, x)): the same nodes, made in one
        call where w and x are lists of Values of one arena (_dot.pxi)."""
        out = dot_nodes(w, x)
        return out if out is not None else sum(wi * xi for wi, xi in zip(w, x))

    # -- the operations of the reference's Value, computed in C (src/ops.h)

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
        return unary(self, op_log, OP_LOG)

    def exp(self):
        return unary(self, op_exp, OP_EXP)

    def relu(self):
        return unary(self, op_relu, OP_RELU)

    # -- the rest are compositions, written as in the pure engine; where the
    #    outer operator's left operand is this Value it is called directly
    #    (binary(OP_ADD, self, y) is what self + y runs), saving a dispatch

    def __neg__(self):
        return binary(OP_MUL, self, -1)  # self * -1

    def __radd__(self, other):
        return binary(OP_ADD, self, other)  # self + other

    def __sub__(self, other):
        return binary(OP_ADD, self, -other)  # self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return binary(OP_MUL, self, other)  # self * other

    def __truediv__(self, other):
        return binary(OP_MUL, self, other ** -1)  # self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def backward(self):
        """Accumulate gradients from this node, in the reference's order (src/backward.c)."""
        check(self)
        cdef int64_t walked = arena_backward(&self.arena.a, self.index)
        if walked == -2:
            raise RuntimeError("a recorded step's graph has no backward (its sums are compact)")
        if walked < 0:
            raise MemoryError("backward ran out of memory")

    # -- copies: detached leaves (value and grad), in the default arena

    def __copy__(self):
        return _detached_value(self.data, self.grad)

    def __deepcopy__(self, memo):
        return _detached_value(self.data, self.grad)

    def __reduce__(self):
        return (_detached_value, (self.data, self.grad))

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
        if a.op[self.index] == OP_DOT:  # either form of a compact sum, as its pairs (arena.h)
            return tuple(make_existing(self.arena, arena_dot_operand(a, self.index, e))
                         for e in range(dot_operands(a, self.index)))
        return tuple(make_existing(self.arena, a.child[e])
                     for e in range(a.child_start[self.index], a.child_start[self.index + 1]))

    @property
    def _local_grads(self):
        check(self)
        cdef arena_t *a = &self.arena.a
        cdef int64_t e, e0 = a.child_start[self.index]
        if a.op[self.index] == OP_DOT:  # a compact sum writes none: each is its product's other factor
            return tuple(a.data[arena_dot_operand(a, self.index, e ^ 1)] for e in range(dot_operands(a, self.index)))
        return tuple(present(a.local_grad[e], a.lg_int[e])
                     for e in range(e0, a.child_start[self.index + 1]))

    def __repr__(self):
        if not alive(self):
            return "Value(<released>)"
        cdef uint8_t t = self.arena.a.tag[self.index]
        return (f"Value(data={present(self.arena.a.data[self.index], t & TAG_DATA_INT)}, "
                f"grad={present(self.arena.a.grad[self.index], t & TAG_GRAD_INT)})")


def _detached_value(data, grad):
    """A new leaf in the default arena holding data and grad: what copy.copy,
    copy.deepcopy and pickle make of a compiled Value (its graph is not kept)."""
    cdef Value v = Value(data)
    v.grad = grad
    return v


cdef Arena custom_arena(tuple children, tuple local_grads):
    """The arena of a user-defined node's children, after checking them."""
    if len(children) != len(local_grads):
        raise ValueError(f"a Value with {len(children)} children needs as many local grads, "
                         f"got {len(local_grads)}")
    cdef Arena arena = None
    cdef Value c
    for item in children:
        if type(item) is not Value:
            raise TypeError(f"the children of a compiled Value must be compiled Values, "
                            f"got {type(item).__name__}")
        c = <Value>item
        check(c)
        if arena is None:
            arena = c.arena
        elif c.arena is not arena:
            raise ArenaMismatchError("cannot combine Values from two different arenas")
    return arena


cdef node_t custom_node(Arena arena, double x, tuple children, tuple local_grads) except -2:
    """Append an OP_CUSTOM node: the local grads are converted first (Python code may
    run), then the children are checked again, then the node is appended. Both are
    snapshots (tuples) whose items custom_arena checked: Python code cannot change them."""
    cdef Py_ssize_t n = len(children), j
    cdef node_t *kids = <node_t *>malloc(n * sizeof(node_t) + 1)
    cdef double *lg = <double *>malloc(n * sizeof(double) + 1)
    cdef uint8_t *lg_int = <uint8_t *>malloc(n + 1)
    cdef node_t i
    if kids == NULL or lg == NULL or lg_int == NULL:
        free(kids)
        free(lg)
        free(lg_int)
        raise_nomem()
    try:
        for j, g in enumerate(local_grads):
            if type(g) is DerivedNumber:
                spoil(arena, "a number derived from data became a local gradient")
            lg[j] = <double>g
            lg_int[j] = isinstance(g, int)
        for c in children:  # that Python code may have released a child, or moved it (__init__)
            check(<Value>c)
            if (<Value>c).arena is not arena:
                raise ArenaMismatchError("cannot combine Values from two different arenas")
        make_room(arena, 1, n)  # before the children's indices are read: they may move
        for j, c in enumerate(children):
            kids[j] = (<Value>c).index
        if arena.recording:
            spoil(arena, "the step has a user-defined node (its local grads were given)")
        i = arena_node(&arena.a, OP_CUSTOM, x, 0.0, <int>n, kids, lg)
        if i >= 0:  # no Python code ran since the append: i is still the node's row
            for j in range(n):
                arena.a.lg_int[arena.a.child_start[i] + j] = lg_int[j]
    finally:
        free(kids)
        free(lg)
        free(lg_int)
    return i


cdef Value make_existing(Arena arena, node_t i):
    """The handle to an existing node: its live handle if it has one, else a new one."""
    cdef Value h
    if arena.a.held[i] != NULL:  # only live handles are held
        return <Value>arena.a.held[i]
    h = Value.__new__(Value)
    h.arena = arena
    h.index = i
    h.epoch = arena.a.epoch[i]
    remember(arena, i, h)
    return h

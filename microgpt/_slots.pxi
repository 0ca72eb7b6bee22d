# The type's add and multiply slots: x + y and x * y, the operations a step
# runs ~55,000 times, straight from CPython's binary operator to the append
# (no method wrappers, no reference counting but the result's). Two Values,
# or a Value and a float or an int on either side (sum's 0 + v, ms + 1e-5,
# (1 / n) * loss: the number becomes an OP_CONST leaf, as binary() wraps it).
# Everything else (another operand type, a stale or mismatched handle, a full
# arena, an empty free list, an int beyond a double) goes to the generic slot
# Cython made (binary() in _value.pxi), which appends the same nodes or raises.
# Included by _engine.pyx after _value.pxi.
from cpython.exc cimport PyErr_Clear, PyErr_Occurred

cdef extern from *:
    """
    typedef PyObject *(*microgpt_binop)(PyObject *, PyObject *);
    /* Put f in type t's add (mul = 0) or multiply (mul = 1) slot; returns the slot it replaces. */
    static microgpt_binop microgpt_set_slot(PyTypeObject *t, int mul, microgpt_binop f) {
        PyNumberMethods *nb = t->tp_as_number;
        microgpt_binop old = mul ? nb->nb_multiply : nb->nb_add;
        if (mul) nb->nb_multiply = f; else nb->nb_add = f;
        return old;
    }
    """
    ctypedef PyObject *(*microgpt_binop)(PyObject *, PyObject *) noexcept
    microgpt_binop set_slot "microgpt_set_slot" (PyTypeObject *t, int mul, microgpt_binop f)
    PyObject *revive_ptr "microgpt_revive" (PyObject *o)
    PyTypeObject *type_of "Py_TYPE" (PyObject *o)
    double float_value "PyFloat_AS_DOUBLE" (PyObject *o)
    double long_value "PyLong_AsDouble" (PyObject *o)


cdef inline PyObject *fast_binary(int op, PyObject *x, PyObject *y) noexcept:
    """x op y as a new reference. Where the fast path cannot run (see the top) the
    generic slot runs instead. Every way out is a return or a tail call, so no
    value lives across a call: the common path saves no registers."""
    if type_of(x) == value_type:
        if type_of(y) == value_type:
            return two_handles(op, <Value>x, <Value>y, x, y)
        return handle_and_number(op, <Value>x, y, x, y)
    if type_of(y) == value_type:  # number + Value runs Value + number (__radd__, __rmul__)
        return handle_and_number(op, <Value>y, x, x, y)
    return generic_slot(op, x, y)


cdef inline PyObject *two_handles(int op, Value x, Value y, PyObject *ox, PyObject *oy) noexcept:
    """binary(op, x, y) for two live handles of one arena, where the arena has room
    and the free list a handle; else the generic slot on the operands ox, oy."""
    cdef PyObject *owner = <PyObject *>x.arena
    if owner == <PyObject *>None or <PyObject *>y.arena != owner or n_free <= 0:
        return generic_slot(op, ox, oy)
    cdef arena_t *a = &x.arena.a
    if not (alive_in(x, a) and alive_in(y, a) and has_room(a, 1, 2)):
        return generic_slot(op, ox, oy)
    cdef node_t i = arena_push_binary(a, op, x.index, y.index)
    if i < 0:  # an int beyond a double: the generic slot raises
        return generic_slot(op, ox, oy)
    return hand_out(owner, a, i)


cdef inline PyObject *handle_and_number(int op, Value x, PyObject *y, PyObject *ox, PyObject *oy) noexcept:
    """binary(op, x, y) for a live handle x and an exact float or int y; else the
    generic slot on the operands ox, oy (x and y in the order they were given)."""
    cdef double c
    cdef int is_int = type_of(y) == int_type
    if y == int_zero:  # sum's start
        c = 0.0
    elif is_int:
        c = long_value(y)
        if c == -1.0 and PyErr_Occurred() != NULL:  # beyond a double: the generic slot raises
            PyErr_Clear()
            return generic_slot(op, ox, oy)
    elif type_of(y) == float_type:
        c = float_value(y)
    else:
        return generic_slot(op, ox, oy)
    cdef PyObject *owner = <PyObject *>x.arena
    if owner == <PyObject *>None or n_free <= 0:
        return generic_slot(op, ox, oy)
    cdef arena_t *a = &x.arena.a
    if not (alive_in(x, a) and has_room(a, 2, 2)):
        return generic_slot(op, ox, oy)
    cdef node_t j = arena_push_const(a, c, is_int)
    cdef node_t i = arena_push_binary(a, op, x.index, j)
    if i < 0:
        arena_release(a, j)  # the operation appends nothing; the generic slot raises
        return generic_slot(op, ox, oy)
    return hand_out(owner, a, i)


cdef inline PyObject *hand_out(PyObject *owner, arena_t *a, node_t i) noexcept:
    """A handle from the free list (not empty) for node i of arena owner (just
    appended). owner is borrowed: the operand that holds it outlives the call."""
    global n_free
    n_free -= 1
    cdef PyObject *h = revive_ptr(free_handles[n_free])
    if <PyObject *>(<Value>h).arena != owner:  # a free handle keeps the default arena only
        return take_arena(h, owner, a, i)
    return point(h, a, i)


cdef inline PyObject *point(PyObject *h, arena_t *a, node_t i) noexcept:
    """h, pointed at node i of a and noted as its handle."""
    (<Value>h).index = i
    (<Value>h).epoch = a.cur_epoch
    a.held[i] = <void *>h
    return h


cdef PyObject *take_arena_now(PyObject *h, PyObject *owner, arena_t *a, node_t i) noexcept:
    """hand_out's rare case: the handle takes a reference to its new arena."""
    (<Value>h).arena = <Arena>owner
    return point(h, a, i)


# called through a pointer, so the compiler keeps it (reference counts, a possible
# dealloc) out of hand_out's callers, whose common path then saves no registers
cdef PyObject *(*take_arena)(PyObject *, PyObject *, arena_t *, node_t) noexcept
take_arena = take_arena_now


cdef object zero = 0
cdef PyObject *int_zero = <PyObject *>zero  # CPython's one int 0 (an int 0 that is not it is read as any int)
cdef PyTypeObject *value_type = <PyTypeObject *>Value
cdef PyTypeObject *int_type = <PyTypeObject *>int
cdef PyTypeObject *float_type = <PyTypeObject *>float
cdef microgpt_binop generic_add = NULL, generic_mul = NULL


cdef inline PyObject *generic_slot(int op, PyObject *x, PyObject *y) noexcept:
    """The slot Cython made for op (binary() in _value.pxi): read where it is called,
    so that the fast path keeps no register for it."""
    return generic_add(x, y) if op == OP_ADD else generic_mul(x, y)


cdef PyObject *add_slot(PyObject *x, PyObject *y) noexcept:
    return fast_binary(OP_ADD, x, y)


cdef PyObject *mul_slot(PyObject *x, PyObject *y) noexcept:
    return fast_binary(OP_MUL, x, y)


generic_add = set_slot(value_type, 0, add_slot)
generic_mul = set_slot(value_type, 1, mul_slot)

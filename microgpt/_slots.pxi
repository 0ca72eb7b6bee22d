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
    """x op y as a new reference, or NULL (nothing appended): the generic slot's case."""
    if type_of(x) == value_type:
        if type_of(y) == value_type:
            return two_handles(op, <Value>x, <Value>y)
        return handle_and_number(op, <Value>x, y)
    if type_of(y) == value_type:  # number + Value runs Value + number (__radd__, __rmul__)
        return handle_and_number(op, <Value>y, x)
    return NULL


cdef inline PyObject *two_handles(int op, Value x, Value y) noexcept:
    """binary(op, x, y) for two live handles of one arena, where the arena has room
    and the free list a handle."""
    if not ready(x, 1) or y.arena is not x.arena or not alive_in(y, &x.arena.a):
        return NULL
    return hand_out(x, arena_push_binary(&x.arena.a, op, x.index, y.index))


cdef inline PyObject *handle_and_number(int op, Value x, PyObject *y) noexcept:
    """binary(op, x, y) for a live handle x and an exact float or int y."""
    cdef double c
    cdef int is_int = type_of(y) == int_type
    if is_int:
        c = long_value(y)
        if c == -1.0 and PyErr_Occurred() != NULL:  # beyond a double: the generic slot raises
            PyErr_Clear()
            return NULL
    elif type_of(y) == float_type:
        c = float_value(y)
    else:
        return NULL
    if not ready(x, 2):
        return NULL
    cdef arena_t *a = &x.arena.a
    cdef node_t j = arena_push_const(a, c, is_int)
    cdef node_t i = arena_push_binary(a, op, x.index, j)
    if i < 0:
        arena_release(a, j)  # the operation appends nothing; the generic slot raises
    return hand_out(x, i)


cdef inline bint ready(Value x, int64_t nodes) noexcept:
    """x is a live handle, its arena has room for nodes nodes and 2 edges, and
    the free list has a handle."""
    return (<object>x.arena is not None and n_free > 0 and alive_in(x, &x.arena.a)
            and has_room(&x.arena.a, nodes, 2))


cdef inline PyObject *hand_out(Value x, node_t i) noexcept:
    """A handle from the free list for node i of x's arena (just appended), or NULL
    where i < 0 (nothing was appended: an int beyond a double). The arena is read
    through x, which holds it (no reference of its own to take and drop)."""
    global n_free
    if i < 0:
        return NULL
    n_free -= 1
    cdef PyObject *h = revive_ptr(free_handles[n_free])
    if (<Value>h).arena is not x.arena:  # a free handle keeps the default arena only
        take_arena(<Value>h, x.arena)
    (<Value>h).index = i
    (<Value>h).epoch = x.arena.a.cur_epoch
    x.arena.a.held[i] = <void *>h
    return h


cdef void take_arena(Value h, Arena arena) noexcept:
    h.arena = arena


cdef PyTypeObject *value_type = <PyTypeObject *>Value
cdef PyTypeObject *int_type = <PyTypeObject *>int
cdef PyTypeObject *float_type = <PyTypeObject *>float
cdef microgpt_binop generic_add = NULL, generic_mul = NULL


cdef PyObject *add_slot(PyObject *x, PyObject *y) noexcept:
    cdef PyObject *h = fast_binary(OP_ADD, x, y)
    return h if h != NULL else generic_add(x, y)


cdef PyObject *mul_slot(PyObject *x, PyObject *y) noexcept:
    cdef PyObject *h = fast_binary(OP_MUL, x, y)
    return h if h != NULL else generic_mul(x, y)


generic_add = set_slot(value_type, 0, add_slot)
generic_mul = set_slot(value_type, 1, mul_slot)

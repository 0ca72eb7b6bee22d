# The type's add and multiply slots: x + y and x * y of two Values, the
# operation a step runs ~50,000 times, straight from CPython's binary operator
# to the append (no method wrappers, no reference counting but the result's).
# Everything else (a number operand, a reflected operation, a stale or
# mismatched handle, a full arena, an empty free list, an int beyond a double)
# goes to the generic slot Cython made (binary() in _value.pxi), which appends
# the same node or raises. Included by _engine.pyx after _value.pxi.

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


cdef inline PyObject *two_values(int op, PyObject *x, PyObject *y) noexcept:
    """x op y as a new reference where both are Values (else NULL: the generic slot)."""
    if type_of(x) != value_type or type_of(y) != value_type:
        return NULL
    return append_binary(op, <Value>x, <Value>y)


cdef inline PyObject *append_binary(int op, Value x, Value y) noexcept:
    """binary(op, x, y) for two live handles of one arena, where the arena has room
    and the free list a handle; else NULL, with nothing appended."""
    global n_free
    if <object>x.arena is None or y.arena is not x.arena or n_free == 0:
        return NULL
    cdef arena_t *a = &x.arena.a
    if not (alive_in(x, a) and alive_in(y, a) and has_room(a, 1, 2)):
        return NULL
    cdef node_t i = arena_push_binary(a, op, x.index, y.index)
    if i < 0:  # int op int beyond a double's range: nothing appended, the generic slot raises
        return NULL
    n_free -= 1
    cdef PyObject *h = revive_ptr(free_handles[n_free])
    if (<Value>h).arena is not x.arena:  # a free handle keeps the default arena only
        take_arena(<Value>h, x.arena)
    (<Value>h).index = i
    (<Value>h).epoch = a.cur_epoch
    a.held[i] = <void *>h
    return h


cdef void take_arena(Value h, Arena arena) noexcept:
    h.arena = arena


cdef PyTypeObject *value_type = <PyTypeObject *>Value
cdef microgpt_binop generic_add = NULL, generic_mul = NULL


cdef PyObject *add_slot(PyObject *x, PyObject *y) noexcept:
    cdef PyObject *h = two_values(OP_ADD, x, y)
    return h if h != NULL else generic_add(x, y)


cdef PyObject *mul_slot(PyObject *x, PyObject *y) noexcept:
    cdef PyObject *h = two_values(OP_MUL, x, y)
    return h if h != NULL else generic_mul(x, y)


generic_add = set_slot(value_type, 0, add_slot)
generic_mul = set_slot(value_type, 1, mul_slot)

# The type's add and multiply slots: x + y and x * y, the operations a step
# runs ~55,000 times, straight from CPython's binary operator to the append
# (no method wrappers, no reference counting but the result's). Two Values,
# or a Value and a float or an int on either side (sum's 0 + v, ms + 1e-5,
# (1 / n) * loss: the number becomes an OP_CONST leaf, as binary() wraps it).
# And its subtract and divide slots, the same way, for a Value on the left:
# x - number (softmax's v - top) and x / y (its e / total, attention's scores
# / HEAD_DIM ** 0.5), the nodes the pure engine's compositions make.
# Everything else (another operand type, a stale or mismatched handle, a full
# arena, an empty free list, two Values that are both ints, an int beyond a
# double) goes to the generic slot Cython made (binary() in _value.pxi), which
# appends the same nodes or raises.
# Included by _engine.pyx after _value.pxi.
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from libc.math cimport fabs

cdef extern from *:
    """
    typedef PyObject *(*microgpt_binop)(PyObject *, PyObject *);
    /* Put f in type t's add (0), multiply (1), subtract (2) or true divide (3)
     * slot; returns the slot it replaces. */
    static microgpt_binop microgpt_set_slot(PyTypeObject *t, int which, microgpt_binop f) {
        PyNumberMethods *nb = t->tp_as_number;
        microgpt_binop *slot = which == 0 ? &nb->nb_add : which == 1 ? &nb->nb_multiply
                               : which == 2 ? &nb->nb_subtract : &nb->nb_true_divide;
        microgpt_binop old = *slot;
        *slot = f;
        return old;
    }
    """
    ctypedef PyObject *(*microgpt_binop)(PyObject *, PyObject *) noexcept
    microgpt_binop set_slot "microgpt_set_slot" (PyTypeObject *t, int which, microgpt_binop f)
    PyObject *revive_ptr "microgpt_revive" (PyObject *o)
    PyTypeObject *type_of "Py_TYPE" (PyObject *o)
    double float_value "PyFloat_AS_DOUBLE" (PyObject *o)
    double long_value "PyLong_AsDouble" (PyObject *o)

cdef extern from "arena.h":
    node_t arena_try_binary(arena_t *a, int op, node_t x, node_t y, epoch_t *epoch) nogil

cdef extern from "ops.h":
    status_t op_pow_value(double x, double k, double *out) nogil  # Python's float ** float


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
    """binary(op, x, y) for two live handles of one arena, where it has room and
    the free list a handle; else the generic slot on the operands ox, oy. The
    default arena's (the drop-in's) here, another's in two_handles_elsewhere."""
    cdef PyObject *owner = <PyObject *>x.arena
    if owner != <PyObject *>_default_arena:
        return two_handles_elsewhere(op, x, y, ox, oy)
    cdef epoch_t epoch
    cdef node_t i = appended(op, x, y, owner, &epoch)
    if i < 0:
        return generic_slot(op, ox, oy)
    return hand_out(owner, a_of(owner), i, epoch, 1)


cdef PyObject *two_handles_elsewhere_now(int op, Value x, Value y, PyObject *ox, PyObject *oy) noexcept:
    """two_handles for the handles of another arena (or of none)."""
    cdef PyObject *owner = <PyObject *>x.arena
    cdef epoch_t epoch
    cdef node_t i = -1 if owner == <PyObject *>None else appended(op, x, y, owner, &epoch)
    if i < 0:
        return generic_slot(op, ox, oy)
    return hand_out(owner, a_of(owner), i, epoch, 0)


# called through a pointer, as handle_and_number below
cdef PyObject *(*two_handles_elsewhere)(int, Value, Value, PyObject *, PyObject *) noexcept
two_handles_elsewhere = two_handles_elsewhere_now


cdef inline arena_t *a_of(PyObject *owner) noexcept:
    return &(<Arena>owner).a


cdef inline node_t appended(int op, Value x, Value y, PyObject *owner, epoch_t *epoch) noexcept:
    """x op y appended to arena owner (x's, not None), its epoch in *epoch, where y
    is of it too, both are live, it has room, the free list a handle and not
    both are ints (arena_try_binary); else -1, nothing appended."""
    if <PyObject *>y.arena != owner or n_free <= 0:
        return -1
    cdef arena_t *a = a_of(owner)
    if not (alive_in(x, a) and alive_in(y, a)):
        return -1
    return arena_try_binary(a, op, x.index, y.index, epoch)


cdef PyObject *handle_and_number_now(int op, Value x, PyObject *y, PyObject *ox, PyObject *oy) noexcept:
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
    return handle_and_constant(op, op, x, c, is_int, ox, oy)


# called through a pointer, so the compiler keeps it (and the constant's append,
# which the subtract and divide slots share) out of fast_binary, whose two-handle
# path then saves no registers
cdef PyObject *(*handle_and_number)(int, Value, PyObject *, PyObject *, PyObject *) noexcept
handle_and_number = handle_and_number_now


cdef inline PyObject *handle_and_constant(int op, int slot, Value x, double c, int is_int,
                                          PyObject *ox, PyObject *oy) noexcept:
    """x op c for a live handle x, c appended as a constant (is_int: an int's);
    else the generic slot `slot` (op's, SUBTRACT or DIVIDE) on the operands ox, oy."""
    cdef PyObject *owner = <PyObject *>x.arena
    if owner == <PyObject *>None or n_free <= 0:
        return generic_slot(slot, ox, oy)
    cdef arena_t *a = &x.arena.a
    if not (alive_in(x, a) and has_room(a, 2, 2)):
        return generic_slot(slot, ox, oy)
    cdef node_t j = arena_push_const(a, c, is_int)
    cdef node_t i = arena_push_binary(a, op, x.index, j)
    if i < 0:
        arena_release(a, j)  # the operation appends nothing; the generic slot raises
        return generic_slot(slot, ox, oy)
    return hand_out(owner, a, i, a.cur_epoch, owner == <PyObject *>_default_arena)


cdef inline int number_value(PyObject *y, double *c) noexcept:
    """An exact float or int y as a double in *c: 1 for a float, 2 for an int, 0
    for anything else or an int beyond a double (no exception left set)."""
    if type_of(y) == float_type:
        c[0] = float_value(y)
        return 1
    if type_of(y) != int_type:
        return 0
    c[0] = long_value(y)
    if c[0] == -1.0 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        return 0
    return 2


cdef PyObject *sub_slot(PyObject *x, PyObject *y) noexcept:
    """x - y for a Value x and a number y: x + (-y), -y as Python negates it (an
    int's -0 is the int 0: +0.0), as the pure engine's __sub__. Else the generic slot."""
    cdef double c
    cdef int kind = number_value(y, &c) if type_of(x) == value_type else 0
    if kind == 0:
        return generic_slot(SUBTRACT, x, y)
    return handle_and_constant(OP_ADD, SUBTRACT, <Value>x, (0.0 - c) if kind == 2 else -c, kind == 2, x, y)


cdef PyObject *truediv_slot(PyObject *x, PyObject *y) noexcept:
    """x / y for a Value x: x * y ** -1, as the pure engine's __truediv__. For a
    Value y, its power node (as power() appends it) and the product; for a number
    y of magnitude in (1e-300, 1e300), y ** -1 as Python's float power computes it
    there (pow(y, -1.0), a float, no error) as a constant, and the product. Else
    the generic slot (a zero, an overflow, a nan: it raises or takes Python's answer)."""
    cdef double c, r
    cdef int kind
    if type_of(x) != value_type:
        return generic_slot(DIVIDE, x, y)
    if type_of(y) == value_type:
        return divide_by_handle(<Value>x, <Value>y, x, y)
    kind = number_value(y, &c)
    if kind == 0 or not (1e-300 < fabs(c) < 1e300) or op_pow_value(c, -1.0, &r) != OP_OK:
        return generic_slot(DIVIDE, x, y)
    return handle_and_constant(OP_MUL, DIVIDE, <Value>x, r, 0, x, y)


cdef inline PyObject *divide_by_handle(Value x, Value y, PyObject *ox, PyObject *oy) noexcept:
    """x / y for two live handles of one arena, where the arena has room, the free
    list a handle and y ** -1 a number: y's OP_POW node (exponent the int -1) and
    the product, its handle only; else the generic slot."""
    cdef PyObject *owner = <PyObject *>x.arena
    if owner == <PyObject *>None or <PyObject *>y.arena != owner or n_free <= 0:
        return generic_slot(DIVIDE, ox, oy)
    cdef arena_t *a = &x.arena.a
    cdef double out, lg
    if not (alive_in(x, a) and alive_in(y, a) and has_room(a, 2, 3)
            and op_pow(a.data[y.index], -1.0, -2.0, &out, &lg) == OP_OK):
        return generic_slot(DIVIDE, ox, oy)
    cdef node_t p = arena_node(a, OP_POW, out, -1.0, 1, &y.index, &lg)
    arena_tag(a, p, OP_POW, 1)
    return hand_out(owner, a, arena_push_binary(a, OP_MUL, x.index, p),  # a float: never -1
                    a.cur_epoch, owner == <PyObject *>_default_arena)


cdef inline PyObject *hand_out(PyObject *owner, arena_t *a, node_t i, epoch_t epoch,
                               bint in_default) noexcept:
    """A handle from the free list (not empty) for node i of arena owner, just
    appended in epoch (in_default: the default arena, which every free handle
    holds). owner is borrowed: the operand that holds it outlives the call."""
    global n_free
    n_free -= 1
    cdef PyObject *h = revive_ptr(free_handles[n_free])
    if not in_default:
        return take_arena(h, owner, a, i, epoch)
    return point(h, a, i, epoch)


cdef inline PyObject *point(PyObject *h, arena_t *a, node_t i, epoch_t epoch) noexcept:
    """h, pointed at node i of a (of epoch) and noted as its handle."""
    (<Value>h).index = i
    (<Value>h).epoch = epoch
    a.held[i] = <void *>h
    return h


cdef PyObject *take_arena_now(PyObject *h, PyObject *owner, arena_t *a, node_t i, epoch_t epoch) noexcept:
    """hand_out's other case: the handle takes a reference to its new arena (and
    drops its reference to the default arena)."""
    (<Value>h).arena = <Arena>owner
    return point(h, a, i, epoch)


# called through a pointer, so the compiler keeps it (reference counts, a possible
# dealloc) out of hand_out's callers, whose common path then saves no registers
cdef PyObject *(*take_arena)(PyObject *, PyObject *, arena_t *, node_t, epoch_t) noexcept
take_arena = take_arena_now


cdef object zero = 0
cdef PyObject *int_zero = <PyObject *>zero  # CPython's one int 0 (an int 0 that is not it is read as any int)
cdef PyTypeObject *value_type = <PyTypeObject *>Value
cdef PyTypeObject *int_type = <PyTypeObject *>int
cdef PyTypeObject *float_type = <PyTypeObject *>float
cdef microgpt_binop generic_add = NULL, generic_mul = NULL, generic_sub = NULL, generic_div = NULL
cdef enum:  # the generic slots beside OP_ADD's and OP_MUL's
    SUBTRACT = 100
    DIVIDE = 101


cdef inline PyObject *generic_slot(int op, PyObject *x, PyObject *y) noexcept:
    """The slot Cython made for op, SUBTRACT or DIVIDE (binary() in _value.pxi): read
    where it is called, so that the fast path keeps no register for it."""
    if op == OP_ADD:
        return generic_add(x, y)
    if op == OP_MUL:
        return generic_mul(x, y)
    return generic_sub(x, y) if op == SUBTRACT else generic_div(x, y)


cdef PyObject *add_slot(PyObject *x, PyObject *y) noexcept:
    return fast_binary(OP_ADD, x, y)


cdef PyObject *mul_slot(PyObject *x, PyObject *y) noexcept:
    return fast_binary(OP_MUL, x, y)


generic_add = set_slot(value_type, 0, add_slot)
generic_mul = set_slot(value_type, 1, mul_slot)
generic_sub = set_slot(value_type, 2, sub_slot)
generic_div = set_slot(value_type, 3, truediv_slot)

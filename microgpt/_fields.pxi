# Value.data and Value.grad where they are plain (a live handle, its arena not
# recording, a float, or the int 0 written to .grad): straight from CPython's
# getset descriptor to the column, without the property's wrapper (an Adam loop
# over the parameters reads and writes each twice a step). Everything else goes
# to the property Cython made (Value.data and Value.grad in _value.pxi), which
# does the same or raises. Included by _engine.pyx after _slots.pxi.

cdef extern from *:
    """
    /* Put get and set in the getset descriptor attr of type t, the old ones in
     * *old_get, *old_set. Returns 0, or -1 where t has no such descriptor. */
    static int microgpt_set_getset(PyTypeObject *t, const char *attr, getter get, setter set,
                                   getter *old_get, setter *old_set) {
        PyObject *d = PyDict_GetItemString(t->tp_dict, attr);
        if (d == NULL || Py_TYPE(d) != &PyGetSetDescr_Type) return -1;
        PyGetSetDef *g = ((PyGetSetDescrObject *)d)->d_getset;
        *old_get = g->get;
        *old_set = g->set;
        g->get = get;
        g->set = set;
        return 0;
    }
    """
    ctypedef PyObject *(*microgpt_getter "getter")(PyObject *, void *) noexcept
    ctypedef int (*microgpt_setter "setter")(PyObject *, PyObject *, void *) noexcept
    int set_getset "microgpt_set_getset" (PyTypeObject *t, const char *attr, microgpt_getter get,
                                          microgpt_setter set, microgpt_getter *old_get,
                                          microgpt_setter *old_set)
    PyObject *new_float "PyFloat_FromDouble" (double x)


cdef inline arena_t *plain(PyObject *o) noexcept:
    """The arena of handle o where its fields are read and written plainly: o
    live, its arena not recording. Else NULL."""
    if <PyObject *>(<Value>o).arena == <PyObject *>None:
        return NULL
    cdef arena_t *a = &(<Value>o).arena.a
    if not alive_in(<Value>o, a) or (<Value>o).arena.recording:
        return NULL
    return a


cdef microgpt_getter property_data_get = NULL, property_grad_get = NULL
cdef microgpt_setter property_data_set = NULL, property_grad_set = NULL


cdef PyObject *data_get(PyObject *o, void *closure) noexcept:
    cdef arena_t *a = plain(o)
    if a == NULL or a.tag[(<Value>o).index] & TAG_DATA_INT:
        return property_data_get(o, closure)
    return new_float(a.data[(<Value>o).index])


cdef PyObject *grad_get(PyObject *o, void *closure) noexcept:
    cdef arena_t *a = plain(o)
    if a == NULL or a.tag[(<Value>o).index] & TAG_GRAD_INT:
        return property_grad_get(o, closure)
    return new_float(a.grad[(<Value>o).index])


cdef int data_set(PyObject *o, PyObject *value, void *closure) noexcept:
    cdef arena_t *a = plain(o) if value != NULL and type_of(value) == float_type else NULL
    if a == NULL:
        return property_data_set(o, value, closure)
    a.data[(<Value>o).index] = float_value(value)
    a.tag[(<Value>o).index] &= ~TAG_DATA_INT
    return 0


cdef int grad_set(PyObject *o, PyObject *value, void *closure) noexcept:
    cdef arena_t *a
    if value != NULL and type_of(value) == float_type:
        a = plain(o)
        if a != NULL:
            a.grad[(<Value>o).index] = float_value(value)
            a.tag[(<Value>o).index] &= ~TAG_GRAD_INT
            return 0
    elif value == int_zero:  # p.grad = 0 (an int 0 that is not CPython's one takes the property)
        a = plain(o)
        if a != NULL:
            a.grad[(<Value>o).index] = 0.0
            a.tag[(<Value>o).index] |= TAG_GRAD_INT
            return 0
    return property_grad_set(o, value, closure)


if (set_getset(value_type, b"data", data_get, data_set, &property_data_get, &property_data_set)
        or set_getset(value_type, b"grad", grad_get, grad_set, &property_grad_get, &property_grad_set)):
    raise ImportError("microgpt._engine: Value has no data or grad descriptor to speed up")

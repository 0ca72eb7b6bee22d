# The life of a Value handle: made for a new node, noted in its arena's handle
# table (node -> its one live handle), forgotten and kept for reuse when freed.
# Every operation makes one and a step drops ~60,000, so this is written to
# cost a few dozen instructions each way. Included by _engine.pyx.
from cpython.object cimport PyTypeObject, freefunc
from cpython.ref cimport Py_DECREF

cdef extern from *:
    """
    /* A handle from the freelist as a new reference: its refcount set to 1.
     * _Py_NewReference (what CPython's own freelists call) also counts it in
     * debug builds and moves tracemalloc's record of the block to this line;
     * a release build skips that call (tracemalloc keeps the first line). */
    static inline PyObject *microgpt_revive(PyObject *o) {
    #if defined(Py_REF_DEBUG) || defined(Py_TRACE_REFS)
        _Py_NewReference(o);
    #else
        Py_SET_REFCNT(o, 1);
    #endif
        return o;
    }
    """
    Value revive "microgpt_revive" (PyObject *o)


# Freed handles kept for reuse. Cython's own freelist would zero the object,
# store None and then the arena, and wraps a __dealloc__ method in a save and
# restore of the pending exception; these do only what a handle needs, and
# forget can neither raise nor run Python code. Every free handle holds a
# reference to the default arena (which lives as long as the module): one of
# that arena keeps its own, so the next operation there takes it without
# touching a reference count or testing its arena; one of another arena swaps
# its arena's for the default's (an arena's columns are freed when its last handle goes).
cdef enum:
    FREE_HANDLES = 8192
    DROP_LEAST = 256  # nodes on top the default arena drops at once (drop_top_now)
cdef PyObject *free_handles[FREE_HANDLES]
cdef Py_ssize_t n_free = 0  # a 64-bit index: no sign extension where it indexes free_handles
cdef freefunc value_tp_free = (<PyTypeObject *>Value).tp_free
cdef Arena _default_arena  # set in _engine.pyx


cdef void value_dealloc(PyObject *o) noexcept:
    """The type's dealloc slot (set below, instead of Cython's). The common case,
    a handle of the default arena onto a free list with room: forget's work done
    here (its held row cleared if it is this handle's), no reference count
    touched; where that row is the top node's, the nodes on top that no handle
    names go too (drop_top, a tail call). The rest is release_handle's."""
    global n_free
    cdef void **held
    cdef node_t i
    if (<Value>o).arena is _default_arena and n_free < FREE_HANDLES:
        free_handles[n_free] = o
        n_free += 1
        held = _default_arena.a.held
        i = (<Value>o).index
        if held[i] == <void *>o:
            held[i] = NULL
            if <int64_t>i + 1 == _default_arena.a.n_nodes:  # (64-bit: no sign extension of its own)
                drop_top()
    else:
        release(o)


cdef void drop_top_now() noexcept:
    """The default arena's top node lost its handle: drop the nodes on top that no
    handle names (src/arena.h arena_pop), down to the pinned mark at most, where
    they are a graph's worth (DROP_LEAST or more): a few thrown away (a result
    read once, an operation that raised halfway) stay, as in any arena, until a
    reclaim or the next drop takes them. Not while a scope is open (it releases
    its nodes at its end) or a step is recorded (a recording notes rows). Only
    the default arena, the drop-in's, where Python's reference counting alone
    ends a graph; an explicit arena's rows stay as appended until a scope, a
    release or a reclaim."""
    cdef Arena arena = _default_arena
    if arena.open_scopes == 0 and not arena.recording:
        arena.reclaimed += arena_pop(&arena.a, arena.pinned, DROP_LEAST)


# called through a pointer, as release below
cdef void (*drop_top)() noexcept
drop_top = drop_top_now


cdef void release_handle(PyObject *o) noexcept:
    """A freed handle of another arena (or of none) onto the free list holding the
    default arena instead (as every free handle does), or, the free list full,
    back to the allocator."""
    global n_free
    cdef bint top = ((<Value>o).arena is _default_arena and _default_arena.a.held[(<Value>o).index] == <void *>o
                     and (<Value>o).index + 1 == _default_arena.a.n_nodes)
    forget(<Value>o)
    if top:  # (the free list full: value_dealloc's drop, on its slow path)
        drop_top()
    # index 0: a row of the default arena (its index was another arena's, maybe
    # beyond this one's rows), which names no handle that has died unattached (fresh_handle)
    (<Value>o).index = 0
    (<Value>o).arena = _default_arena  # drops its arena's reference (which may free that arena)
    if n_free < FREE_HANDLES:
        free_handles[n_free] = o
        n_free += 1
    else:
        Py_DECREF(_default_arena)  # the reference just stored
        value_tp_free(o)


# called through a pointer, so the compiler keeps it out of value_dealloc (whose
# common path then saves no registers)
cdef void (*release)(PyObject *) noexcept
release = release_handle


(<PyTypeObject *>Value).tp_dealloc = value_dealloc


cdef inline Value fresh_handle():
    """A handle object not yet attached to a node (from the freelist if it has one)."""
    global n_free
    if n_free > 0:
        n_free -= 1
        return revive(free_handles[n_free])
    return Value.__new__(Value)


cdef inline Value attach(Value h, Arena arena, node_t i):
    """h made node i's handle (i just appended): the node's one handle (a handle
    left at index i by a released node is stale and stays so)."""
    h.arena = arena
    h.index = i
    h.epoch = arena.a.cur_epoch
    remember(arena, i, h)
    return h


cdef inline Value new_handle(Arena arena, node_t i):
    """A new handle for node i, just appended."""
    return attach(fresh_handle(), arena, i)


cdef inline Value make(Arena arena, node_t i):
    """new_handle, or MemoryError where the append failed (i < 0)."""
    if i < 0:
        raise_nomem()
    return new_handle(arena, i)


cdef inline void remember(Arena arena, node_t i, Value h) noexcept:
    """Note h as node i's handle in the arena's held column (a borrowed pointer:
    h's dealloc clears it). Every live handle is there: that is how reclaiming
    finds what is held, and how a node's one handle is found again."""
    arena.a.held[i] = <void *>h


cdef inline void forget(Value h) noexcept:
    """Clear h's entry in its arena's held column, if it is h's (a stale handle's
    entry was cleared when its node was released, and may name a newer handle)."""
    if <object>h.arena is None:
        return
    if h.arena.a.held[h.index] == <void *>h:
        h.arena.a.held[h.index] = NULL

# Arena: owns the columns of one graph store (src/arena.h); graph scopes release to a mark.
# Included by _engine.pyx.

from cpython.pythread cimport PyThread_get_thread_ident

THREADS = ("give each thread its own Arena() (arena.value(x), arena.graph()): a graph() "
           "scope releases every node made in its arena while it was open, by any thread")

@cython.auto_pickle(False)
cdef class Arena:
    """Owns the columns of one graph store; frees them on collection.

    Nodes made inside ``with arena.graph():`` are released when it ends. When
    the columns are full, nodes no handle reaches are reclaimed first (live
    nodes slide down in creation order; their handles follow), and the columns
    double only if that freed less than half of them. The default arena (the
    drop-in's) also drops the nodes on top that no handle names, 256 or more at
    once, when the top node's handle goes, outside scopes and recordings (its
    ``reclaimed`` counts them). Nodes below the mark of
    an open scope or of ``mark()`` are never moved, so marks stay valid.
    """

    def __cinit__(self):
        if arena_init(&self.a) != 0:
            raise MemoryError("cannot allocate an arena")
        self.derived = []

    def __dealloc__(self):
        arena_free(&self.a)  # every handle held a reference to this arena: none is left

    def value(self, data):
        """A new leaf Value in this arena."""
        cdef double x = <double>data
        make_room(self, 1, 0)
        cdef node_t i = arena_leaf(&self.a, OP_LEAF, x)
        if i >= 0:
            set_int_tag(&self.a, i, TAG_DATA_INT, data)
        return make(self, i)

    def __len__(self):
        return self.a.n_nodes

    @property
    def num_edges(self):
        return self.a.n_edges

    def mark(self):
        """The current size; release(mark) drops every node made after it.
        The nodes below a mark are not moved by reclaiming until a release
        to it or below (so the mark keeps meaning the same nodes)."""
        self.pinned = self.a.n_nodes
        return self.a.n_nodes

    def release(self, int64_t mark):
        if mark < 0 or mark > self.a.n_nodes:
            raise ValueError(f"mark {mark} is outside the arena (0..{self.a.n_nodes})")
        arena_release(&self.a, mark)
        if self.pinned > mark:
            self.pinned = mark

    def reclaim(self):
        """Reclaim now what the arena reclaims when it is full: the nodes (above
        any open scope's or mark()'s mark) that no handle reaches, directly or
        through live parents. Live nodes keep their order and values; their
        indices (``Value.node``) may change. Returns the number reclaimed."""
        return reclaim(self)

    @property
    def reclaimed(self):
        """Nodes reclaimed so far."""
        return self.reclaimed

    @property
    def unmade(self):
        """Nodes the compact sums made so far stand for and did not make (each sum
        of n products: 2 nodes instead of 2 n + 1)."""
        return self.unmade

    @property
    def unmade_edges(self):
        """The edges those nodes would have had, less the compact sums' own."""
        return self.unmade_edges

    @property
    def capacity(self):
        """Nodes the columns hold before they must reclaim or grow."""
        return self.a.cap_nodes

    def replay(self, int64_t start=0):
        """Recompute every node from index start on, in creation order, from its
        op, constant operand and children (src/ops.h, the per-operation path's
        own arithmetic), after new values were written into leaves
        (``v.data = x``); grads of those nodes are reset to 0.

        The same nodes in the same order give the same floats as building the
        graph again, provided no constant was derived from data when it was
        recorded (a Tape recomputes those; this does not). A node whose local
        gradients were given by its maker cannot be recomputed: ValueError.
        """
        if start < 0 or start > self.a.n_nodes:
            raise ValueError(f"start {start} is outside the arena (0..{self.a.n_nodes})")
        cdef int custom = 0
        cdef status_t s = arena_replay(&self.a, start, &custom)
        if s != OP_OK:
            raise_status(s)
        if custom:
            raise ValueError("the graph has a node whose local gradients were given "
                             "(Value(data, children, local_grads)), or a recorded step's compact "
                             "sum: it cannot be recomputed")

    def graph(self):
        """A context manager: nodes made inside it are released on exit."""
        return GraphScope(self)

    @property
    def bytes_per_node(self):
        """Bytes the columns take for one node: node columns, backward scratch,
        and the edges averaged over the nodes in use (sizes from src/arena.c)."""
        if self.a.n_nodes == 0:
            return float(arena_node_bytes())
        return arena_node_bytes() + arena_edge_bytes() * self.a.n_edges / <double>self.a.n_nodes

    @property
    def nbytes(self):
        """Bytes allocated for the columns now (capacity, not use)."""
        return int(self.a.cap_nodes * arena_node_bytes() + self.a.cap_edges * arena_edge_bytes())

    def column(self, name):
        """A copy of one column for inspection, as an array.array (numpy.asarray
        wraps it without copying). A copy, because growing the arena moves the
        columns: a live view could outlive its memory. The columns are arena.h's
        tables (arena_column)."""
        cdef const void *rows
        cdef int64_t n
        cdef char code
        cdef size_t size
        if not isinstance(name, str) or not arena_column(&self.a, name.encode(), &rows, &n, &code, &size):
            shown = [c for c in arena_column_names().decode().split(", ")
                     if arena_column(&self.a, c.encode(), &rows, &n, &code, &size)]
            raise KeyError(f"no column {name!r}: {', '.join(shown)}")
        return array(chr(code), (<const char *>rows)[:n * size])


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
    cdef int64_t pinned     # the arena's pinned mark before this scope opened

    def __cinit__(self, Arena arena not None):
        self.arena = arena
        self.mark = -1

    def __enter__(self):
        if self.mark >= 0:
            raise RuntimeError("this graph scope is already open")
        cdef unsigned long me = PyThread_get_thread_ident()
        if self.arena.open_scopes > 0 and self.arena.scope_thread != me:
            raise RuntimeError("graph scopes of one arena cannot be open in two threads at once: "
                               + THREADS)
        self.arena.scope_thread = me
        self.mark = self.arena.a.n_nodes
        self.pinned = self.arena.pinned
        self.arena.pinned = self.mark  # reclaiming never moves what lies below the mark
        self.depth = self.arena.open_scopes
        self.arena.open_scopes += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.mark < 0:
            return False
        if self.arena.open_scopes != self.depth + 1:
            raise RuntimeError("graph scopes must close in the reverse order they were opened")
        arena_release(&self.arena.a, self.mark)
        self.arena.pinned = self.pinned if self.pinned < self.mark else self.mark
        self.arena.open_scopes -= 1
        self.mark = -1
        return False



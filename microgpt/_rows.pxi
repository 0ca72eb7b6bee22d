# Rows: the node rows of a fixed list of Values, for a C loop to read (Adam's
# parameters, a replay tape's). Included by _engine.pyx, after _value.pxi.

@cython.final
@cython.auto_pickle(False)
cdef class Rows:
    """The node rows of a fixed list of Values of one arena, for a C loop.

    refresh() before each use. Nothing can have changed while the arena has
    neither released (its epoch) nor moved a handle (its moves: a reclaim,
    Value.__init__ on a live handle) since the last check; while nothing has
    moved, the rows are checked against the epochs their nodes were made in
    (one comparison when they are one block); otherwise they are taken again
    from the Values, as the pure engine follows its objects. A released Value
    raises StaleValueError.
    """

    def __cinit__(self, Arena arena not None, values):
        self.arena = arena
        self.values = tuple(values)
        self.n = len(self.values)
        self.idx = <node_t *>malloc(max(self.n, 1) * sizeof(node_t))
        self.epochs = <epoch_t *>malloc(max(self.n, 1) * sizeof(epoch_t))
        if not (self.idx and self.epochs):
            raise MemoryError()
        self.taken = False
        self.block_at = -1

    def __dealloc__(self):
        free(self.idx)
        free(self.epochs)

    cdef int refresh(self) except -1:
        cdef arena_t *a = &self.arena.a
        cdef int64_t i
        if self.taken and self.moves == self.arena.moves:
            if self.checked_at == a.cur_epoch:
                return 0
            if self.block_at >= 0:
                if (self.block_at + self.n <= a.n_nodes and
                        memcmp(&a.epoch[self.block_at], self.epochs, self.n * sizeof(epoch_t)) == 0):
                    self.checked_at = a.cur_epoch
                    return 0
            else:
                for i in range(self.n):
                    if self.idx[i] >= a.n_nodes or a.epoch[self.idx[i]] != self.epochs[i]:
                        break
                else:
                    self.checked_at = a.cur_epoch
                    return 0
        cdef Value v
        for i in range(self.n):
            v = <Value>self.values[i]
            if not alive(v):
                raise StaleValueError("a parameter's node was released; create parameters "
                                      "outside any graph() scope")
            if v.arena is not self.arena:  # re-initialised (Value.__init__) in another arena
                raise ArenaMismatchError("parameters must all live in one arena")
            self.idx[i] = v.index
            self.epochs[i] = v.epoch
        self.block_at = self.idx[0] if self.n > 0 else -1
        for i in range(self.n):
            if self.idx[i] != self.block_at + i:
                self.block_at = -1
                break
        self.taken = True
        self.moves = self.arena.moves
        self.checked_at = a.cur_epoch
        return 0

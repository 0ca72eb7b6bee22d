# Adam over parameter Values of one arena, in C (src/adam.c). Included by _engine.pyx.

@cython.auto_pickle(False)
cdef class Adam:
    """Adam over parameter Values of one arena, with the reference's arithmetic, in C."""
    cdef Arena arena
    cdef tuple held            # the parameter handles: they keep the nodes live, and know
                               #   their rows after the arena reclaims (a copy of params)
    cdef node_t *idx           # (n,) node index of each parameter, taken from held
    cdef epoch_t *epochs       # (n,) ... and the epoch its node was made in
    cdef uint64_t moves        # arena.moves when idx was taken (-1: never)
    cdef int64_t block_at      # idx[i] == block_at + i for every i (the usual case), or -1
    cdef double *m             # (n,) first moment
    cdef double *v             # (n,) second moment
    cdef int64_t n
    cdef readonly list params
    cdef readonly double beta1, beta2, eps

    def __cinit__(self, params, double beta1=0.85, double beta2=0.99, double eps=1e-8):
        self.params = list(params)
        self.held = tuple(self.params)
        self.n = len(self.params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.idx = <node_t *>malloc(max(self.n, 1) * sizeof(node_t))
        self.epochs = <epoch_t *>malloc(max(self.n, 1) * sizeof(epoch_t))
        self.moves = <uint64_t>-1
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
        cdef Value p
        if self.moves == self.arena.moves:  # no handle changed node: the rows taken, if still alive
            if self.block_at >= 0:  # one block of rows: one comparison of epochs
                if (self.block_at + self.n <= a.n_nodes and
                        memcmp(&a.epoch[self.block_at], self.epochs, self.n * sizeof(epoch_t)) == 0):
                    self.update(lr_t, step)
                    return
            else:
                for i in range(self.n):
                    if self.idx[i] >= a.n_nodes or a.epoch[self.idx[i]] != self.epochs[i]:
                        break
                else:
                    self.update(lr_t, step)
                    return
        for i in range(self.n):
            p = <Value>self.held[i]
            if not alive(p):
                raise StaleValueError("a parameter's node was released; create parameters "
                                      "outside any graph() scope")
            if p.arena is not self.arena:  # re-initialised (Value.__init__) in another arena
                raise ArenaMismatchError("Adam's parameters must all live in one arena")
            self.idx[i] = p.index  # its row now (reclaiming may have moved it), as the
                                   # pure Adam follows its Value objects
            self.epochs[i] = p.epoch
        self.moves = self.arena.moves
        self.block_at = self.idx[0]
        for i in range(self.n):
            if self.idx[i] != self.block_at + i:
                self.block_at = -1
                break
        self.update(lr_t, step)

    cdef int update(self, double lr_t, int64_t step) except -1:
        cdef arena_t *a = &self.arena.a
        cdef status_t s
        arena_adam(a, self.idx, self.n, self.m, self.v, lr_t, self.beta1, self.beta2, self.eps, step, &s)
        if s == OP_ZERODIV:
            raise ZeroDivisionError("float division by zero")
        if s != OP_OK:
            raise_status(s)
        return 0

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




def _adam_powers(xs, squares=True):
    """(fast, pow) results for each x: adam_square vs pow(x, 2.0), or adam_sqrt
    vs pow(x, 0.5). For the tests that pin the fast paths to pow, bit for bit."""
    cdef double x
    if squares:
        return [(adam_square(x), x ** 2) for x in xs]
    return [(adam_sqrt(x), x ** 0.5) for x in xs]

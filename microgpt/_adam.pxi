# Adam over parameter Values of one arena, in C (src/adam.c). Included by _engine.pyx.

@cython.auto_pickle(False)
cdef class Adam:
    """Adam over parameter Values of one arena, with the reference's arithmetic, in C."""
    cdef Arena arena
    cdef Rows rows             # the parameters' node rows (the handles keep the nodes live)
    cdef double *m             # (n,) first moment
    cdef double *v             # (n,) second moment
    cdef int64_t n
    cdef readonly list params
    cdef readonly double beta1, beta2, eps
    cdef list cuts             # [0, ..., n]: runs with no parameter twice (tied weights
                               # start a new run, read after the update before them)

    def __cinit__(self, params, double beta1=0.85, double beta2=0.99, double eps=1e-8):
        check_betas(beta1, beta2)
        self.params = list(params)
        self.n = len(self.params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = <double *>malloc(max(self.n, 1) * sizeof(double))
        self.v = <double *>malloc(max(self.n, 1) * sizeof(double))
        if not (self.m and self.v):
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
            self.m[i] = 0.0
            self.v[i] = 0.0
        if self.n > 0:
            self.rows = Rows(self.arena, self.params)
        self.cuts = [0]
        seen = set()
        for i in range(self.n):
            if id(self.params[i]) in seen:  # the same Value again: its update must see the one before
                self.cuts.append(i)
                seen = set()
            seen.add(id(self.params[i]))
        self.cuts.append(self.n)

    def __dealloc__(self):
        free(self.m)
        free(self.v)

    def step(self, double lr_t, step):
        """Update every parameter with learning rate lr_t at step (from 0), zero its grad.
        A parameter listed twice (tied weights) is updated twice, the second time
        with the zeroed grad the first left, as the pure engine's loop does."""
        check_step(step)
        if self.n == 0:
            return
        cdef double t = <double>(step + 1)  # as the pure engine's beta1 ** (step + 1) takes it
        self.rows.refresh()  # each parameter's row now (a reclaim may have moved it)
        cdef arena_t *a = &self.arena.a
        cdef status_t s = OP_OK
        cdef int64_t k, lo, hi
        if len(self.cuts) == 2:
            arena_adam(a, self.rows.idx, self.rows.block_at >= 0, self.n, self.m, self.v, lr_t, self.beta1, self.beta2, self.eps, t, &s)
        else:
            for k in range(len(self.cuts) - 1):
                lo, hi = self.cuts[k], self.cuts[k + 1]
                arena_adam(a, self.rows.idx + lo, 0, hi - lo, self.m + lo, self.v + lo, lr_t, self.beta1, self.beta2, self.eps, t, &s)
                if s != OP_OK:
                    break
        if s == OP_ZERODIV:
            raise ZeroDivisionError("float division by zero")
        if s != OP_OK:
            raise_status(s)

    def get_state(self):
        """(m, v) as lists of floats, in params order (for checkpoints)."""
        cdef int64_t i
        return [self.m[i] for i in range(self.n)], [self.v[i] for i in range(self.n)]

    def set_state(self, m, v):
        if len(m) != self.n or len(v) != self.n:
            raise ValueError(f"optimizer state has {len(m)}/{len(v)} entries for {self.n} params")
        check_second_moments(v)
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


def _adam_lanes(int cap=-1):
    """The lanes Adam takes (0 plain, 1 AVX2, 2 AVX-512), capped at cap from now
    on where cap >= 0: for the tests that hold every build to the same doubles."""
    return adam_lanes(cap)

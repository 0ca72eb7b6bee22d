/* backward.c: the reference's backward order, walked without recursion. */
#include "arena.h"

/* Depth-first post-order from root, children in order, each node once: the
 * reference's recursive build_topo with an explicit stack, leaves left out
 * (backward does nothing at a node without children; the root is always
 * written). A node is marked when its edge is taken, as the recursion marks it
 * on entry.
 *
 * A node gets a frame only when the walk goes into one of its children (a
 * child reached already, or a leaf, needs nothing to come back to). A frame
 * is one stack_node row: an add's or a multiply's node v (>= 0) whose second
 * edge is still to take (start[v] + 1: no test of where its edges end); ~v,
 * every child taken (v is written out when the frame is popped; a node of
 * one child is framed so at once); or FRAME_MORE, a node of 3 or more
 * children whose next edge e and node v are the stack_edge row, e << 32 | v
 * (e < 2^32: edge_t). Frame 0 is a
 * sentinel (FRAME_MORE, never resumed), so popping a frame tests no depth:
 * frames are the nodes of one path, at most n_nodes - 1 of them (node 0 has
 * no children), so they and the sentinel fit in n_nodes rows. Node indices
 * are held unsigned: a 32-bit load then extends them for free. */
#define FRAME_MORE INT32_MIN  /* no ~v: node indices are below INT32_MAX */

static int64_t frame_more(int64_t e, uint32_t v) { return (int64_t)((uint64_t)e << 32 | v); }

/* The visit column is read through visit and marked through mark: the same
 * rows, but an empty asm keeps the compiler from knowing it, so that it does
 * not compute a row's address once for the test and the mark (an instruction
 * more on every edge, where about half the edges are only tested). */
#if defined(__GNUC__)
#define OPAQUE(p) __asm__("" : "+r"(p))
#else
#define OPAQUE(p) ((void)0)
#endif

/* c: a child just read. Where it is new, mark it; where it has children too,
 * do what the frames need (the rest of the arguments) and go into it. */
#define TAKE(c, ...)                                                   \
    if (visit[c] != stamp) {                                           \
        mark[c] = stamp;                                               \
        int64_t c_start = start[c], c_end = start[(int64_t)(c) + 1];   \
        if (c_start != c_end) {                                        \
            __VA_ARGS__;                                               \
            v = c, s0 = c_start, s1 = c_end;                           \
            goto enter;                                                \
        }                                                              \
    }

int64_t arena_topo(arena_t *a, node_t root) {
    assert(root >= 0 && root < a->n_nodes);
    stamp_t stamp = arena_stamp(a);
    const edge_t *start = a->child_start;
    const node_t *child = a->child;
    const stamp_t *visit = a->visit;
    stamp_t *mark = a->visit;
    OPAQUE(mark);
    node_t *out = a->topo, *snode = a->stack_node;
    int64_t *sedge = a->stack_edge;

    uint32_t v = (uint32_t)root, c;
    int64_t s0 = start[v], s1 = start[(int64_t)v + 1];
    mark[v] = stamp;
    if (s0 == s1) {  /* a leaf: the root alone */
        *out = root;
        return 1;
    }
    snode[0] = FRAME_MORE;
    node_t *top = snode;  /* the innermost frame (a pointer: compilers kept an index scaled for both rows) */

enter:  /* v: a node just reached, with edges [s0, s1) */
    assert(top - snode + 1 < a->n_nodes);
    if (s0 + 2 != s1) goto not_binary;
    c = (uint32_t)child[s0];
    assert(c < v);  /* children come before their parent */
    TAKE(c, *++top = (node_t)v)
    c = (uint32_t)child[s0 + 1];
    assert(c < v);
    TAKE(c, *++top = ~(node_t)v)
    *out++ = (node_t)v;  /* every child done: post-order */
pop:
    for (;;) {
        node_t f = *top;
        if (f >= 0) {  /* a binary node's second edge */
            c = (uint32_t)child[start[(uint32_t)f] + 1];
            TAKE(c, *top = ~f)
            *out++ = f;
            --top;
            continue;
        }
        if (ARENA_LIKELY(f != FRAME_MORE)) {
            *out++ = ~f;
            --top;
            continue;
        }
        if (top == snode) break;  /* the sentinel: the root is out */
        int64_t t = top - snode;
        uint64_t more = (uint64_t)sedge[t];
        uint32_t u = (uint32_t)more;
        int64_t e = (int64_t)(more >> 32);
        c = (uint32_t)child[e++];
        assert(c < u);
        if (e < start[(int64_t)u + 1])
            sedge[t] = frame_more(e, u);
        else
            *top = ~(node_t)u;
        TAKE(c, (void)0)
    }
    return out - a->topo;

not_binary:  /* one child, or three or more: framed before the first is taken */
    *++top = s1 - s0 == 1 ? ~(node_t)v : FRAME_MORE;
    sedge[top - snode] = frame_more(s0 + 1, v);
    c = (uint32_t)child[s0];
    assert(c < v);
    TAKE(c, (void)0)
    goto pop;
}
#undef TAKE
#undef OPAQUE

int64_t arena_backward(arena_t *a, node_t root) {
    int64_t n = arena_topo(a, root);
    const edge_t *start = a->child_start;
    const node_t *child = a->child;
    const double *lg = a->local_grad;
    double *grad = a->grad;
    const node_t *topo = a->topo;

    uint8_t *tag = a->tag;
    const uint8_t *lg_int = a->lg_int;

    if (a->compact_made)  /* a compact sum (arena.h) is refused before any gradient is written */
        for (int64_t t = 0; t < n; ++t)
            if (tag[topo[t]] & TAG_NO_BACKWARD) return -2;
    grad[root] = 1.0;  /* the reference's self.grad = 1: an int */
    tag[root] |= TAG_GRAD_INT;
    /* The chain from node to node is the loop's time: the next node is most
     * often the last child the node before wrote (a node comes after its last
     * child in the post-order), whose grad is then taken from the register, not
     * read back from the store just made. */
    int64_t t = n - 1;
    uint32_t v = (uint32_t)topo[t];
    double gv = grad[v];
    for (;;) {
        int64_t e = start[v];
        if (ARENA_LIKELY((tag[v] & (TAG_GRAD_INT | TAG_TWO_EDGES)) == TAG_TWO_EDGES)) {
            /* float * anything is a float, an add's or a multiply's two edges: most nodes */
            uint32_t c0 = (uint32_t)child[e], c1 = (uint32_t)child[e + 1];
            tag[c0] &= (uint8_t)~TAG_GRAD_INT;  /* int + float is a float */
            grad[c0] += lg[e] * gv;
            tag[c1] &= (uint8_t)~TAG_GRAD_INT;
            double g1 = grad[c1] + lg[e + 1] * gv;  /* after c0's: c1 may be c0 (x * x) */
            grad[c1] = g1;
            if (--t < 0) break;
            v = (uint32_t)topo[t];
            if (v == c1)
                gv = g1;
            else
                gv = grad[v];
            continue;
        }
        ARENA_FORGET_LOADS();  /* v's row read again here, not kept through the common case above */
        v = (uint32_t)topo[t];
        int64_t end = start[(int64_t)v + 1];  /* read once: the tag writes below are bytes */
        if (!(tag[v] & TAG_GRAD_INT)) {
            for (; e < end; ++e) {
                node_t c = child[e];
                tag[c] &= (uint8_t)~TAG_GRAD_INT;
                grad[c] += lg[e] * gv;
            }
        } else {
            for (; e < end; ++e) {
                node_t c = child[e];
                double d = lg[e] * gv;
                if (lg_int[e]) {
                    if (d == 0.0) d = 0.0;  /* an int product is never -0.0 */
                } else {
                    tag[c] &= (uint8_t)~TAG_GRAD_INT;
                }
                grad[c] += d;
            }
        }
        if (--t < 0) break;
        v = (uint32_t)topo[t];
        gv = grad[v];
    }
    return n;
}

/* The transfer plan of the chunked collectives, checked with an in-process
 * fake of W ranks: aligned ranges that tile the vector, rounds that move
 * every element exactly once, and a simulated reduce-scatter that sums in
 * rank order whatever the chunk size, and the chain reduce-scatter's plan
 * leaves the flat exchange's bits.
 * module: comm */
#include "tests/harness.h"
#include "comm/comm.h"
#include "model/rng.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

static void test_ranges_aligned(void)
{
    size_t sizes[] = {0, 1, 63, 64, 65, 1000, 4096, 803968, 6910365696ull};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (int W = 1; W <= 9; W++) {
            size_t n = sizes[si], next = 0;
            for (int r = 0; r < W; r++) {
                size_t lo, hi;
                comm_range(n, r, W, &lo, &hi);
                EXPECT(lo == next && lo <= hi && hi <= n);
                EXPECT(lo % COMM_ALIGN == 0);
                EXPECT(hi % COMM_ALIGN == 0 || hi == n);
                next = hi;
            }
            EXPECT(next == n);
        }
}

/* Every element of every rank's range is in exactly one round's piece,
 * pieces are at most a chunk, and the round count is the same for all. */
static void test_plan_covers(void)
{
    size_t sizes[] = {1, 100, 803968, 1000003};
    size_t chunks[] = {64, 128, 1000, 1 << 20};
    for (size_t si = 0; si < 4; si++)
        for (size_t ci = 0; ci < 4; ci++)
            for (int W = 1; W <= 7; W++) {
                size_t n = sizes[si], C = chunks[ci], rounds = comm_rounds(n, W, C);
                for (int r = 0; r < W; r++) {
                    size_t lo, hi, next;
                    comm_range(n, r, W, &lo, &hi);
                    next = lo;
                    for (size_t k = 0; k < rounds; k++) {
                        size_t off, cnt;
                        comm_piece(n, r, W, C, k, &off, &cnt);
                        EXPECT(cnt <= C);
                        if (cnt) {
                            EXPECT(off == next);
                            next += cnt;
                        }
                    }
                    EXPECT(next == hi);
                }
            }
}

/* W fake ranks' gradients reduced round by round through the plan: the
 * owner's elements equal the rank-order float sum, for every chunk size. */
static void test_fake_reduce_scatter(void)
{
    enum { W = 5 };
    size_t n = 10007, C = 320;
    float *g[W], *want = malloc(n * sizeof(float)), *recv = malloc(W * C * sizeof(float));
    for (int r = 0; r < W; r++) {
        g[r] = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++)
            g[r][i] = (float)(rng_unit(9, (uint64_t)r, i) - 0.5) * (float)(1 + r * 1000);
    }
    for (size_t i = 0; i < n; i++) {
        float s = g[0][i];
        for (int r = 1; r < W; r++)
            s += g[r][i];
        want[i] = s;
    }
    size_t rounds = comm_rounds(n, W, C);
    EXPECT(rounds > 1);
    for (size_t k = 0; k < rounds; k++)
        for (int me = 0; me < W; me++) {
            size_t off, cnt;
            comm_piece(n, me, W, C, k, &off, &cnt);
            for (int r = 0; r < W; r++)   /* what rank r sends to me this round */
                memcpy(recv + (size_t)r * C, g[r] + off, cnt * sizeof(float));
            for (size_t i = 0; i < cnt; i++) {
                float s = recv[i];
                for (int r = 1; r < W; r++)
                    s += recv[(size_t)r * C + i];
                g[me][off + i] = s;
            }
        }
    int bad = 0;
    for (int me = 0; me < W; me++) {
        size_t lo, hi;
        comm_range(n, me, W, &lo, &hi);
        bad |= memcmp(g[me] + lo, want + lo, (hi - lo) * sizeof(float)) != 0;
    }
    EXPECT(!bad);
    for (int r = 0; r < W; r++)
        free(g[r]);
    free(want);
    free(recv);
}

/* One fake rank's reduce-scatter of the span [a, b) of W vectors, buf[r]
 * holding rank r's span: what comm_reduce_scatter_span does over MPI. */
static void fake_span_rs(float **buf, size_t n, size_t a, size_t b, int W, size_t C, float *recv)
{
    size_t rounds = comm_span_rounds(n, a, b, W, C);
    float *out[16];
    for (int me = 0; me < W; me++)
        out[me] = malloc((b - a + 1) * sizeof(float));
    for (size_t k = 0; k < rounds; k++)
        for (int me = 0; me < W; me++) {
            size_t off, cnt;
            comm_span_piece(n, a, b, me, W, C, k, &off, &cnt);
            for (int r = 0; r < W; r++)
                memcpy(recv + (size_t)r * C, buf[r] + (off - a), cnt * sizeof(float));
            comm_sum_pieces(out[me] + (off - a), recv, C, W, cnt);
        }
    for (int me = 0; me < W; me++) {   /* results land after every rank has sent */
        size_t lo, hi;
        comm_range(n, me, W, &lo, &hi);
        lo = lo > a ? lo : a;
        hi = hi < b ? hi : b;
        if (hi > lo)
            memcpy(buf[me] + (lo - a), out[me] + (lo - a), (hi - lo) * sizeof(float));
        free(out[me]);
    }
}

/* ZeRO-2's buckets: reducing a vector span by span, at boundaries that cut
 * ranges anywhere (layers are not 64-aligned), leaves each owner the same
 * bits as the whole-vector reduce-scatter, for any chunk size and W. */
static void test_fake_bucketed_equals_whole(void)
{
    size_t n = 5003, cuts[] = {0, 7, 700, 701, 1999, 2048, 3333, 4999, 5003};
    int nb = (int)(sizeof cuts / sizeof cuts[0]) - 1;
    size_t chunks[] = {64, 192, 1 << 20};
    int bad = 0, pieces_seen = 0;
    for (int W = 1; W <= 6; W++)
        for (size_t ci = 0; ci < 3; ci++) {
            size_t C = chunks[ci];
            float *whole[16], *bucketed[16], *recv = malloc((size_t)W * C * sizeof(float));
            for (int r = 0; r < W; r++) {
                whole[r] = malloc(n * sizeof(float));
                bucketed[r] = malloc(n * sizeof(float));
                for (size_t i = 0; i < n; i++)
                    whole[r][i] = (float)(rng_unit(11, (uint64_t)r, i) - 0.5) * (float)(1 + r * 997);
                memcpy(bucketed[r], whole[r], n * sizeof(float));
            }
            fake_span_rs(whole, n, 0, n, W, C, recv);
            for (int k = nb - 1; k >= 0; k--) {   /* in backward's order: last bucket first */
                float *span[16];
                for (int r = 0; r < W; r++)
                    span[r] = bucketed[r] + cuts[k];
                fake_span_rs(span, n, cuts[k], cuts[k + 1], W, C, recv);
                pieces_seen += comm_span_rounds(n, cuts[k], cuts[k + 1], W, C) > 0;
            }
            for (int me = 0; me < W; me++) {
                size_t lo, hi;
                comm_range(n, me, W, &lo, &hi);
                bad |= memcmp(whole[me] + lo, bucketed[me] + lo, (hi - lo) * sizeof(float)) != 0;
                /* and the whole-vector fake is comm_piece's plan */
                size_t off, cnt;
                comm_piece(n, me, W, C, 0, &off, &cnt);
                size_t so, sc;
                comm_span_piece(n, 0, n, me, W, C, 0, &so, &sc);
                bad |= off != so || cnt != sc;
            }
            bad |= comm_span_rounds(n, 0, n, W, C) != comm_rounds(n, W, C);
            for (int r = 0; r < W; r++) {
                free(whole[r]);
                free(bucketed[r]);
            }
            free(recv);
        }
    EXPECT(!bad);
    EXPECT(pieces_seen > 0);
}

/* The chain over [a, b) as the MPI ranks run it, one fake rank after
 * another: chunk j's partial starts as rank 0's part, each rank adds its
 * own (x = x + g_r), rank W-1's sum lands in the owner's buffer. */
static void fake_chain_rs(float **buf, size_t n, size_t a, size_t b, int W, size_t C)
{
    size_t J = comm_chain_chunks(n, a, b, W, C), S = comm_chain_largest(n, a, b, W, C);
    float *x = malloc((S ? S : 1) * sizeof(float));
    for (size_t j = 0; j < J; j++) {
        size_t off, cnt;
        int owner;
        comm_chain_chunk(n, a, b, W, C, j, &off, &cnt, &owner);
        memcpy(x, buf[0] + (off - a), cnt * sizeof(float));
        for (int r = 1; r < W; r++)
            for (size_t i = 0; i < cnt; i++)
                x[i] = x[i] + buf[r][off - a + i];
        memcpy(buf[owner] + (off - a), x, cnt * sizeof(float));
    }
    free(x);
}

/* The chain's chunks tile [a, b) in vector order, each inside its owner's
 * range and at most a chunk (the slots' size), and the bytes it sends
 * are about one span per rank. */
static void test_chain_plan(void)
{
    size_t n = 100003, spans[][2] = {{0, 100003}, {7, 4999}, {50000, 50001}, {640, 640}, {99000, 100003}};
    size_t chunks[] = {64, 1000, 1 << 20};
    int bad = 0;
    for (size_t si = 0; si < 5; si++)
        for (size_t ci = 0; ci < 3; ci++)
            for (int W = 1; W <= 9; W++) {
                size_t a = spans[si][0], b = spans[si][1], C = chunks[ci], next = a;
                size_t J = comm_chain_chunks(n, a, b, W, C), S = comm_chain_largest(n, a, b, W, C);
                bad |= S > C || S > comm_chain_size(n, a, b, W, C);
                for (size_t j = 0; j < J; j++) {
                    size_t off, cnt, lo, hi;
                    int owner;
                    comm_chain_chunk(n, a, b, W, C, j, &off, &cnt, &owner);
                    comm_range(n, owner, W, &lo, &hi);
                    bad |= off != next || cnt == 0 || cnt > S || off < lo || off + cnt > hi;
                    next = off + cnt;
                }
                bad |= next != b;
                double sent = 0;
                for (int r = 0; r < W; r++)
                    sent += comm_chain_send_bytes(n, a, b, r, W);
                /* W-1 links of the chain carry the span; the owners' sums add at most one more. */
                bad |= W > 1 && (sent < 4.0 * (double)(b - a) * (W - 1) || sent > 4.0 * (double)(b - a) * W);
            }
    EXPECT(!bad);
    /* the default chunk cuts a 100M-float vector on 8 ranks into 8 pieces per owner */
    EXPECT(comm_chain_chunks(100000000, 0, 100000000, 8, COMM_CHUNK_DEFAULT) == 64);
}

/* The chain leaves every owner the flat exchange's bits, for whole
 * vectors and ZeRO-2 buckets, any W and chunk; and the data are such that
 * another order would not (the check could fail). */
static void test_chain_equals_flat(void)
{
    size_t n = 70001, spans[][2] = {{0, 70001}, {0, 17}, {3, 33333}, {33333, 70001}};
    size_t chunks[] = {64, 640, 1 << 20};
    int bad = 0, order_matters = 0;
    for (size_t si = 0; si < 4; si++)
        for (size_t ci = 0; ci < 3; ci++)
            for (int W = 2; W <= 6; W++) {
                size_t a = spans[si][0], b = spans[si][1], C = chunks[ci];
                float *flat[16], *chain[16], *recv = malloc((size_t)W * C * sizeof(float));
                for (int r = 0; r < W; r++) {
                    flat[r] = malloc((b - a) * sizeof(float));
                    chain[r] = malloc((b - a) * sizeof(float));
                    for (size_t i = 0; i < b - a; i++)
                        flat[r][i] = (float)(rng_unit(12, (uint64_t)r, a + i) - 0.5) * (float)(1 + r * 997);
                    memcpy(chain[r], flat[r], (b - a) * sizeof(float));
                }
                for (size_t i = 0; i < b - a && !order_matters; i++) {
                    float f = chain[0][i], v = chain[W - 1][i];
                    for (int r = 1; r < W; r++)
                        f += chain[r][i];
                    for (int r = W - 2; r >= 0; r--)
                        v += chain[r][i];
                    order_matters = memcmp(&f, &v, sizeof f) != 0;
                }
                fake_span_rs(flat, n, a, b, W, C, recv);
                fake_chain_rs(chain, n, a, b, W, C);
                for (int me = 0; me < W; me++) {
                    size_t lo, hi;
                    comm_range(n, me, W, &lo, &hi);
                    lo = lo > a ? lo : a;
                    hi = hi < b ? hi : b;
                    if (hi > lo)
                        bad |= memcmp(flat[me] + (lo - a), chain[me] + (lo - a), (hi - lo) * sizeof(float)) != 0;
                }
                for (int r = 0; r < W; r++) {
                    free(flat[r]);
                    free(chain[r]);
                }
                free(recv);
            }
    EXPECT(!bad);
    EXPECT(order_matters);
}

/* A span that misses a rank's range gives that rank no piece. */
static void test_span_outside_range(void)
{
    size_t lo, hi, off, cnt;
    comm_range(1000, 1, 2, &lo, &hi);
    comm_span_piece(1000, 0, lo, 1, 2, 64, 0, &off, &cnt);
    EXPECT(cnt == 0);
    comm_span_piece(1000, lo - 10, lo + 10, 1, 2, 64, 0, &off, &cnt);
    EXPECT(off == lo && cnt == 10);
    comm_span_piece(1000, lo - 10, lo + 10, 0, 2, 64, 0, &off, &cnt);
    EXPECT(off == lo - 10 && cnt == 10);
    EXPECT(comm_span_rounds(1000, 10, 10, 2, 64) == 0);
}

static void test_chunk_setting(void)
{
    size_t keep = comm_get_chunk();
    comm_set_chunk(1000);
    EXPECT(comm_get_chunk() == 960);
    comm_set_chunk(3);
    EXPECT(comm_get_chunk() == COMM_ALIGN);
    comm_set_chunk(keep);
    EXPECT(comm_get_chunk() == keep);
}

/* One process: agreements need no peer, so nothing fails, and the phase
 * a timeout would name round-trips (NULL is the training step). */
static void test_phase_and_failure(void)
{
    int64_t v[2] = {3, 7};
    double d = 1.5;
    const char *was = comm_phase("exit agreement");
    EXPECT(!strcmp(comm_phase(NULL), "exit agreement"));
    EXPECT(!strcmp(comm_phase(was), "training step"));
    double keep = comm_set_timeout(0.001);
    EXPECT(comm_max(v, 2) == ST_OK && v[0] == 3 && v[1] == 7);
    EXPECT(comm_sum(&d, 1) == ST_OK && d == 1.5);
    EXPECT(comm_bcast(v, sizeof v, 0) == ST_OK && comm_barrier() == ST_OK);
    const comm_failure *f = NULL;
    EXPECT(comm_failed(&f) == 0 && f != NULL);
    comm_set_timeout(keep);
}

/* A timeout seen by a data plane outside comm.c (NCCL) is recorded like
 * one of comm.c's own: later waits fail at once with 86, and the record
 * the ledger's comm_timeout line is made from names the agreement. Last:
 * it breaks the process's communicator for good. */
static void test_note_timeout(void)
{
    comm_set_timeout(5);
    comm_phase("final checkpoint commit");
    const char *a = comm_note_timeout("NCCL reduce-scatter", -1, 5.25);
    const comm_failure *f = NULL;
    EXPECT(!strcmp(a, "final checkpoint commit (NCCL reduce-scatter)"));
    EXPECT(comm_failed(&f) == ST_WATCHDOG && f->peer == -1 && f->waited == 5.25 && f->timeout == 5 &&
           !strcmp(f->agreement, a));
    comm_phase(NULL);
}

int main(void)
{
    harness_run("ranges aligned and tiling", test_ranges_aligned);
    harness_run("plan covers every element once", test_plan_covers);
    harness_run("fake W-rank reduce-scatter sums in rank order", test_fake_reduce_scatter);
    harness_run("bucketed span reduce-scatter == whole vector, bitwise", test_fake_bucketed_equals_whole);
    harness_run("a span outside a rank's range is no piece of it", test_span_outside_range);
    harness_run("chain chunks tile the span inside their owners' ranges", test_chain_plan);
    harness_run("chain reduce-scatter == flat exchange, bitwise", test_chain_equals_flat);
    harness_run("chunk setting", test_chunk_setting);
    harness_run("one process: no failure, the phase round-trips", test_phase_and_failure);
    harness_run("a data plane's timeout is recorded as comm.c's own", test_note_timeout);
    return harness_end();
}

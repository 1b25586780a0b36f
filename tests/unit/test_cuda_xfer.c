/* The NCCL data plane's host side without a GPU (comm/xfer.c): the local
 * rank and device choice from launcher variables; the chunked reduce-scatter
 * and all-gather schedules run on an in-process fake of W ranks (bytes moved
 * as NCCL would, summed in rank order as the kernel does) against the CPU
 * rule (the chain reduce-scatter's rounds, whole vectors and spans), for
 * uneven ranges and W that does not divide the vector; the
 * timeout state machine; NCCL results to exit codes; transport lines.
 * module: comm cuda */
#include "tests/harness.h"
#include "comm/xfer.h"
#include "comm/comm.h"
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- launcher variables ---- */

static const char *fake_env[8][2];
static const char *fake_get(const char *k)
{
    for (int i = 0; i < 8 && fake_env[i][0]; i++)
        if (!strcmp(fake_env[i][0], k))
            return fake_env[i][1];
    return NULL;
}
static void fake_set(int i, const char *k, const char *v)
{
    fake_env[i][0] = k;
    fake_env[i][1] = v;
    if (i + 1 < 8)
        fake_env[i + 1][0] = NULL;
}

static void test_local_rank(void)
{
    int local = -5;
    const char *from = NULL;
    char why[256] = "";
    fake_set(0, NULL, NULL);
    EXPECT(cuda_xfer_local_rank(fake_get, &local, &from, why, sizeof why) == 0);
    fake_set(0, "SLURM_LOCALID", "3");
    EXPECT(cuda_xfer_local_rank(fake_get, &local, &from, why, sizeof why) == 1);
    EXPECT(local == 3 && !strcmp(from, "SLURM_LOCALID"));
    /* Open MPI's wins over Slurm's (mpirun inside an allocation sets both). */
    fake_set(1, "OMPI_COMM_WORLD_LOCAL_RANK", "5");
    EXPECT(cuda_xfer_local_rank(fake_get, &local, &from, why, sizeof why) == 1);
    EXPECT(local == 5 && !strcmp(from, "OMPI_COMM_WORLD_LOCAL_RANK"));
    fake_set(0, "MPI_LOCALRANKID", "0");
    EXPECT(cuda_xfer_local_rank(fake_get, &local, &from, why, sizeof why) == 1 && local == 0);
    const char *bad[] = {"", "-1", "x", "1x", " 2", "99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fake_set(0, "SLURM_LOCALID", bad[i]);
        why[0] = 0;
        EXPECT(cuda_xfer_local_rank(fake_get, &local, &from, why, sizeof why) == -1);
        EXPECT(strstr(why, "SLURM_LOCALID") != NULL);
    }
}

static void test_pick_device(void)
{
    char why[256] = "";
    EXPECT(cuda_xfer_pick_device(3, 8, why, sizeof why) == 3);
    EXPECT(cuda_xfer_pick_device(0, 8, why, sizeof why) == 0);
    EXPECT(cuda_xfer_pick_device(7, 8, why, sizeof why) == 7);
    EXPECT(cuda_xfer_pick_device(5, 1, why, sizeof why) == 0);   /* one GPU bound per rank */
    EXPECT(cuda_xfer_pick_device(4, 4, why, sizeof why) == -1 && strstr(why, "one rank per GPU"));
    EXPECT(cuda_xfer_pick_device(0, 0, why, sizeof why) == -1);
}

/* ---- the schedules on a fake of W ranks ---- */

/* Values whose sums round, so any other order than rank order shows. */
static float value(int r, size_t i)
{
    return ldexpf((float)((int)((i * 2654435761u + (size_t)r * 97u) % 1048573u) - 524286), -(int)((i + (size_t)r * 5) % 13));
}

/* The op rank `from` posts towards `to` in a list, or NULL. */
static const cuda_xfer_op *find_op(const cuda_xfer_op *ops, int nops, int to)
{
    for (int i = 0; i < nops; i++)
        if (ops[i].peer == to)
            return &ops[i];
    return NULL;
}

/* The buffer a chain message reads or writes on rank r. */
static float *chain_buf(float **g, float **slots, size_t S, size_t a, int r, const cuda_xfer_msg *m)
{
    return m->slot < 0 ? g[r] + (m->off - a) : slots[r] + (size_t)m->slot * S;
}

/* Whether rank `to` posts, this round, a receive from `from` of count
 * floats (its recv or its fin); which one in *m. */
static int chain_match(const cuda_xfer_chain_round *to, int from, size_t count, const cuda_xfer_msg **m)
{
    if (to->recv.peer == from && to->recv.count == count) {
        *m = &to->recv;
        return 1;
    }
    if (to->fin.peer == from && to->fin.count == count) {
        *m = &to->fin;
        return 1;
    }
    return 0;
}

/* The chain over [a, b) of an n-vector on a fake of W ranks, round by
 * round as NCCL and the add kernel run it: every send meets a receive of
 * its peer in the same round (NCCL would hang otherwise), every receive is
 * met, a slot is never sent from and received into in one round, and the
 * owners end with the CPU rule's bits. Returns the number of mismatches. */
static int run_reduce_scatter_span(size_t n, size_t a, size_t b, int W, size_t chunk)
{
    int bad = 0;
    size_t T = cuda_xfer_chain_rounds(n, a, b, W, chunk), S = comm_chain_largest(n, a, b, W, chunk) + 1;
    float **g = calloc((size_t)W, sizeof *g), **slots = calloc((size_t)W, sizeof *slots);
    cuda_xfer_chain_round *st = calloc((size_t)W, sizeof *st);
    for (int r = 0; r < W; r++) {
        g[r] = malloc((b - a + 1) * sizeof(float));
        slots[r] = malloc(CUDA_XFER_CHAIN_SLOTS * S * sizeof(float));
        for (size_t i = a; i < b; i++)
            g[r][i - a] = value(r, i);
    }
    bad += W > 1 && b > a && T != comm_chain_chunks(n, a, b, W, chunk) + (size_t)W - 1;
    for (size_t t = 0; t < T + 2; t++) {   /* two rounds past the end: nothing left to do */
        int received = 0, sent = 0;
        for (int r = 0; r < W; r++) {
            cuda_xfer_chain_round_plan(n, a, b, r, W, chunk, t, &st[r]);
            received += (st[r].recv.peer >= 0) + (st[r].fin.peer >= 0);
            bad += st[r].recv.peer >= 0 && st[r].send.peer >= 0 && st[r].send.slot == st[r].recv.slot;
            bad += t >= T && (st[r].send.peer >= 0 || st[r].recv.peer >= 0 || st[r].fin.peer >= 0 || st[r].add);
        }
        for (int r = 0; r < W; r++) {
            const cuda_xfer_msg *o = &st[r].send, *m = NULL;
            if (o->peer < 0)
                continue;
            sent++;
            if (o->peer >= W || !chain_match(&st[o->peer], r, o->count, &m) || m->off != o->off) {
                bad++;
                continue;
            }
            memcpy(chain_buf(g, slots, S, a, o->peer, m), chain_buf(g, slots, S, a, r, o), o->count * sizeof(float));
        }
        bad += sent != received;
        for (int r = 0; r < W; r++) {   /* the kernel: partial + own part */
            const cuda_xfer_chain_round *x = &st[r];
            if (!x->add)
                continue;
            float *s = slots[r] + (size_t)x->add_slot * S, *v = g[r] + (x->add_off - a);
            for (size_t i = 0; i < x->add_count; i++) {
                float y = s[i] + v[i];
                if (x->add_into_vector)
                    v[i] = y;
                else
                    s[i] = y;
            }
        }
    }
    for (int r = 0; r < W; r++) {
        size_t lo, hi;
        comm_range(n, r, W, &lo, &hi);
        lo = lo > a ? lo : a;
        hi = hi < b ? hi : b;
        for (size_t i = lo; i < hi; i++) {
            float want = value(0, i);
            for (int q = 1; q < W; q++)
                want += value(q, i);
            bad += memcmp(&g[r][i - a], &want, sizeof want) != 0;
        }
    }
    for (int r = 0; r < W; r++) {
        free(g[r]);
        free(slots[r]);
    }
    free(g);
    free(slots);
    free(st);
    return bad;
}

static int run_reduce_scatter(size_t n, int W, size_t chunk)
{
    int bad = run_reduce_scatter_span(n, 0, n, W, chunk);
    /* ZeRO-2 buckets: spans cut anywhere */
    if (n > 10)
        bad += run_reduce_scatter_span(n, 3, n - 5, W, chunk) + run_reduce_scatter_span(n, n / 3, n / 2 + 1, W, chunk);
    return bad;
}

static int run_allgather(size_t n, int W, size_t chunk)
{
    int bad = 0;
    size_t rounds = comm_rounds(n, W, chunk);
    float **p = calloc((size_t)W, sizeof *p);
    cuda_xfer_op **ops = calloc((size_t)W, sizeof *ops);
    int *nops = calloc((size_t)W, sizeof *nops);
    for (int r = 0; r < W; r++) {
        size_t lo, hi;
        comm_range(n, r, W, &lo, &hi);
        p[r] = malloc((n + 1) * sizeof(float));
        ops[r] = malloc((size_t)(W > 1 ? W - 1 : 1) * sizeof(cuda_xfer_op));
        for (size_t i = 0; i < n; i++)
            p[r][i] = i >= lo && i < hi ? value(9, i) : NAN;
    }
    for (size_t k = 0; k < rounds; k++) {
        for (int r = 0; r < W; r++)
            nops[r] = cuda_xfer_ag_round(n, r, W, chunk, k, ops[r]);
        for (int a = 0; a < W; a++)
            for (int i = 0; i < nops[a]; i++) {
                const cuda_xfer_op *o = &ops[a][i], *m = find_op(ops[o->peer], nops[o->peer], a);
                if (o->send_count == 0)
                    continue;
                if (!m || m->recv_count != o->send_count || m->recv_off != o->send_off || o->send_count > chunk) {
                    bad++;
                    continue;
                }
                memcpy(p[o->peer] + m->recv_off, p[a] + o->send_off, o->send_count * sizeof(float));
            }
    }
    for (int r = 0; r < W; r++) {
        for (size_t i = 0; i < n; i++) {
            float want = value(9, i);
            bad += memcmp(&p[r][i], &want, sizeof want) != 0;
        }
        free(p[r]);
        free(ops[r]);
    }
    free(p);
    free(ops);
    free(nops);
    return bad;
}

static void test_schedules(void)
{
    const size_t ns[] = {1, 63, 64, 65, 1000, 4097, 12345, 64 * 7 + 5};
    const int ws[] = {1, 2, 3, 5, 7, 8};
    const size_t chunks[] = {64, 128, 1024, COMM_CHUNK_DEFAULT};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof ws / sizeof ws[0]; b++)
            for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
                int rs = run_reduce_scatter(ns[a], ws[b], chunks[c]), ag = run_allgather(ns[a], ws[b], chunks[c]);
                if (rs || ag)
                    fprintf(stderr, "    n %zu W %d chunk %zu: %d reduce-scatter, %d all-gather mismatches\n",
                            ns[a], ws[b], chunks[c], rs, ag);
                EXPECT(rs == 0 && ag == 0);
            }
}

/* The bucket gathers (ZeRO 3) over the span [a, b) of an n-vector, on W
 * fake ranks each holding only the span with its own part filled in:
 * after the rounds the whole span is everyone's, every send meeting its
 * receive (the chain reduce-scatter of spans has its own test). */
static int run_span(size_t n, size_t a, size_t b, int W, size_t chunk)
{
    int bad = 0;
    size_t L = b - a, rounds = comm_span_rounds(n, a, b, W, chunk);
    float *p = malloc((size_t)W * (L + 1) * sizeof(float));
    cuda_xfer_op *ops = malloc((size_t)W * (size_t)W * sizeof *ops);
    int *nops = calloc((size_t)W, sizeof *nops);
    for (int r = 0; r < W; r++) {
        size_t lo, hi;
        comm_range(n, r, W, &lo, &hi);
        for (size_t i = 0; i < L; i++)
            p[(size_t)r * (L + 1) + i] = a + i >= lo && a + i < hi ? value(9, a + i) : NAN;
    }
    for (size_t k = 0; k < rounds; k++) {
        for (int r = 0; r < W; r++)
            nops[r] = cuda_xfer_ag_span_round(n, a, b, r, W, chunk, k, ops + (size_t)r * W);
        for (int q = 0; q < W; q++)
            for (int i = 0; i < nops[q]; i++) {
                const cuda_xfer_op *o = &ops[(size_t)q * W + i], *m = find_op(ops + (size_t)o->peer * W,
                                                                                nops[o->peer], q);
                if (o->send_count == 0)
                    continue;
                if (!m || m->recv_count != o->send_count || m->recv_off != o->send_off ||
                    o->send_off + o->send_count > L || o->send_count > chunk) {
                    bad++;
                    continue;
                }
                memcpy(p + (size_t)o->peer * (L + 1) + m->recv_off, p + (size_t)q * (L + 1) + o->send_off,
                       o->send_count * sizeof(float));
            }
    }
    for (int r = 0; r < W; r++)
        for (size_t i = 0; i < L; i++) {
            float want = value(9, a + i);
            bad += memcmp(&p[(size_t)r * (L + 1) + i], &want, sizeof want) != 0;
        }
    free(p);
    free(ops);
    free(nops);
    return bad;
}

static void test_span_schedules(void)
{
    const size_t spans[][3] = {{1000, 0, 1000}, {1000, 100, 700}, {4097, 4000, 4097}, {12345, 64, 65},
                               {12345, 5000, 12000}};
    const int ws[] = {1, 2, 3, 8};
    const size_t chunks[] = {64, 128, COMM_CHUNK_DEFAULT};
    for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++)
        for (size_t w = 0; w < sizeof ws / sizeof ws[0]; w++)
            for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
                int bad = run_span(spans[i][0], spans[i][1], spans[i][2], ws[w], chunks[c]);
                if (bad)
                    fprintf(stderr, "    n %zu span [%zu, %zu) W %d chunk %zu: %d mismatches\n", spans[i][0],
                            spans[i][1], spans[i][2], ws[w], chunks[c], bad);
                EXPECT(bad == 0);
            }
}

/* A peer whose range is empty (more ranks than 64-float units) posts
 * nothing it would have to match. */
static void test_empty_ranges(void)
{
    cuda_xfer_op ops[8];
    /* n = 100: units 2 over W 8: most ranks own nothing. */
    int total = 0;
    for (int r = 0; r < 8; r++) {
        int k = cuda_xfer_ag_round(100, r, 8, 64, 0, ops);
        for (int i = 0; i < k; i++)
            EXPECT(ops[i].send_count > 0 || ops[i].recv_count > 0);
        total += k;
    }
    EXPECT(total > 0 && total < 8 * 7);
    EXPECT(run_reduce_scatter(100, 8, 64) == 0 && run_allgather(100, 8, 64) == 0);
}

/* ---- waiting ---- */

static void test_wait(void)
{
    cuda_xfer_wait w;
    cuda_xfer_wait_begin(&w, 100.0, 5.0);
    EXPECT(cuda_xfer_wait_poll(&w, 101.0, CUDA_NCCL_SUCCESS, 0) == CUDA_XW_WAITING);
    EXPECT(cuda_xfer_wait_poll(&w, 104.9, CUDA_NCCL_IN_PROGRESS, 0) == CUDA_XW_WAITING);
    EXPECT(cuda_xfer_wait_poll(&w, 105.5, CUDA_NCCL_SUCCESS, 0) == CUDA_XW_TIMED_OUT);
    EXPECT(cuda_xfer_wait_poll(&w, 106.0, CUDA_NCCL_SUCCESS, 1) == CUDA_XW_TIMED_OUT);   /* terminal */

    cuda_xfer_wait_begin(&w, 0.0, 5.0);
    EXPECT(cuda_xfer_wait_poll(&w, 1.0, CUDA_NCCL_SUCCESS, 1) == CUDA_XW_DONE);

    cuda_xfer_wait_begin(&w, 0.0, 5.0);
    EXPECT(cuda_xfer_wait_poll(&w, 9.0, CUDA_NCCL_REMOTE, 0) == CUDA_XW_FAILED && w.err == CUDA_NCCL_REMOTE);

    /* A finished stream with an async error is still an error. */
    cuda_xfer_wait_begin(&w, 0.0, 5.0);
    EXPECT(cuda_xfer_wait_poll(&w, 1.0, CUDA_NCCL_SYSTEM, 1) == CUDA_XW_FAILED);

    /* timeout 0: waits forever, errors still end it. */
    cuda_xfer_wait_begin(&w, 0.0, 0.0);
    EXPECT(cuda_xfer_wait_poll(&w, 1e9, CUDA_NCCL_IN_PROGRESS, 0) == CUDA_XW_WAITING);
    EXPECT(cuda_xfer_wait_poll(&w, 2e9, CUDA_NCCL_INTERNAL, 0) == CUDA_XW_FAILED);
    cuda_xfer_wait_begin(&w, 0.0, -3.0);
    EXPECT(cuda_xfer_wait_poll(&w, 1e9, CUDA_NCCL_SUCCESS, 0) == CUDA_XW_WAITING);
}

static void test_status(void)
{
    EXPECT(cuda_xfer_status(CUDA_NCCL_SUCCESS) == ST_OK);
    EXPECT(cuda_xfer_status(CUDA_NCCL_REMOTE) == ST_WATCHDOG);
    EXPECT(cuda_xfer_status(CUDA_NCCL_SYSTEM) == ST_WATCHDOG);
    EXPECT(cuda_xfer_status(CUDA_NCCL_INVALID_USAGE) == ST_SOFTWARE);
    EXPECT(cuda_xfer_status(CUDA_NCCL_UNHANDLED_CUDA) == ST_SOFTWARE);
    EXPECT(strstr(cuda_xfer_advice(CUDA_NCCL_REMOTE), "86") != NULL);
    EXPECT(strstr(cuda_xfer_advice(CUDA_NCCL_UNHANDLED_CUDA), "nvidia-smi") != NULL);
}

/* ---- transport lines ---- */

static void test_transport(void)
{
    cuda_xfer_transports t;
    char line[512];
    const char *nvlink =
        "gpu1:1234:1240 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n"
        "gpu1:1234:1240 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM/read\n"
        "gpu1:1234:1240 [0] NCCL INFO Connected all rings\n";
    cuda_xfer_transport_scan(nvlink, strlen(nvlink), &t);
    EXPECT(t.p2p == 2 && t.channels == 2 && t.socket == 0);
    EXPECT(cuda_xfer_transport_line(&t, line, sizeof line) == 0);
    EXPECT(strstr(line, "P2P (NVLink or PCIe) inside nodes (2 connections)") != NULL);

    const char *ib =
        "a:1:2 [0] NCCL INFO Using network IB\n"
        "a:1:2 [0] NCCL INFO Channel 00/0 : 8[0] -> 0[0] [receive] via NET/IB/0/GDRDMA\n"
        "a:1:2 [0] NCCL INFO Channel 00/0 : 0[0] -> 8[0] [send] via NET/IB/0/GDRDMA\n"
        "a:1:2 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via SHM/direct/direct\n";
    cuda_xfer_transport_scan(ib, strlen(ib), &t);
    EXPECT(t.ib == 2 && t.shm == 1 && !strcmp(t.network, "IB"));
    EXPECT(cuda_xfer_transport_line(&t, line, sizeof line) == 0);
    EXPECT(strstr(line, "NET/IB between nodes (2 connections), shared memory inside nodes (1 connection)") != NULL);

    const char *sock =
        "b:1:2 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.2<0>\n"
        "b:1:2 [0] NCCL INFO Using network Socket\n"
        "b:1:2 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/Socket/0\n"
        "b:1:2 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/Socket/0";   /* no final newline */
    cuda_xfer_transport_scan(sock, strlen(sock), &t);
    EXPECT(t.socket == 2 && t.channels == 2 && !strcmp(t.network, "Socket"));
    EXPECT(cuda_xfer_transport_line(&t, line, sizeof line) == 1);
    EXPECT(strncmp(line, "fell back to sockets (NET/Socket: 2 connections)", 48) == 0);

    const char *efa = "c:1:2 [3] NCCL INFO Channel 02/0 : 3[3] -> 11[3] [send] via NET/AWS Libfabric/3/GDRDMA\n";
    cuda_xfer_transport_scan(efa, strlen(efa), &t);
    EXPECT(t.other_net == 1 && !strcmp(t.other_name, "AWS Libfabric"));
    cuda_xfer_transport_line(&t, line, sizeof line);
    EXPECT(strstr(line, "NET/AWS Libfabric between nodes (1 connection)") != NULL);

    /* Lines that are not NCCL's, or not connections, count nothing. */
    const char *noise = "Channel 00 via NET/Socket/0\nNCCL INFO comm 0x1 rank 0 nranks 1 - Init COMPLETE\n\n";
    cuda_xfer_transport_scan(noise, strlen(noise), &t);
    EXPECT(t.channels == 0);
    cuda_xfer_transport_line(&t, line, sizeof line);
    EXPECT(strstr(line, "no peer connections") != NULL);

    /* A tiny buffer truncates, never overflows. */
    cuda_xfer_transport_scan(sock, strlen(sock), &t);
    char small[16];
    memset(small, 'x', sizeof small);
    cuda_xfer_transport_line(&t, small, 8);
    EXPECT(strlen(small) == 7 && small[8] == 'x');
}

int main(void)
{
    harness_run("local rank from OMPI/Slurm/MPICH variables, bad values refused", test_local_rank);
    harness_run("device of a local rank", test_pick_device);
    harness_run("reduce-scatter and all-gather schedules on a fake of W ranks equal the CPU rule bitwise",
                test_schedules);
    harness_run("ranks with empty ranges post nothing unmatched", test_empty_ranges);
    harness_run("bucket (span) gathers: every rank's part of the span everywhere", test_span_schedules);
    harness_run("wait state machine: done, error, timeout, no timeout", test_wait);
    harness_run("NCCL results to exit codes", test_status);
    harness_run("transport from NCCL's INFO log; sockets called out", test_transport);
    return harness_end();
}

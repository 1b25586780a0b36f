/* The writer's worker pool: a fixed set of threads, started once, that take
 * jobs from a queue; ckpt_pool_wait is the barrier a save ends with. */
#include "ckpt_int.h"

#include <stdlib.h>

typedef struct {
    void (*fn)(void *arg);
    void *arg;
} ckpt_pool_job;

struct ckpt_pool {
    pthread_mutex_t mu;
    pthread_cond_t work, idle;   /* work: a job or stop; idle: a job finished */
    ckpt_pool_job *queue;        /* ring of cap */
    size_t head, len, cap;
    int running, stop, n;
    pthread_t th[64];
};

static void *ckpt_pool_main(void *arg)
{
    ckpt_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->len == 0)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->len == 0)
            break;   /* stop, and nothing left to run */
        ckpt_pool_job j = p->queue[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        j.fn(j.arg);
        pthread_mutex_lock(&p->mu);
        p->running--;
        pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

ckpt_pool *ckpt_pool_create(int n)
{
    ckpt_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    n = n < 1 ? 1 : n > 64 ? 64 : n;
    p->cap = (size_t)n * 2;
    p->queue = calloc(p->cap, sizeof *p->queue);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->idle, NULL);
    for (int i = 0; p->queue && i < n; i++) {
        if (pthread_create(&p->th[p->n], NULL, ckpt_pool_main, p) != 0)
            break;
        p->n++;
    }
    if (p->n == 0) {
        ckpt_pool_free(p);
        return NULL;
    }
    return p;
}

int ckpt_pool_size(const ckpt_pool *p) { return p->n; }

int ckpt_pool_add(ckpt_pool *p, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&p->mu);
    if (p->len == p->cap) {
        size_t cap = p->cap * 2;
        ckpt_pool_job *q = malloc(cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&p->mu);
            return -1;
        }
        for (size_t i = 0; i < p->len; i++)
            q[i] = p->queue[(p->head + i) % p->cap];
        free(p->queue);
        p->queue = q;
        p->head = 0;
        p->cap = cap;
    }
    p->queue[(p->head + p->len) % p->cap] = (ckpt_pool_job){fn, arg};
    p->len++;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void ckpt_pool_wait(ckpt_pool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->len > 0 || p->running > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void ckpt_pool_free(ckpt_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->idle);
    free(p->queue);
    free(p);
}

/* A loaded cfg as spot/'s and money/'s option structs: which keys each
 * concept reads, and which of them the user gave (a cost estimate prints
 * only what its input determines). */
#include "opts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "comm/comm.h"
#include "cuda/plan.h"
#include "model/model.h"
#include "util/util.h"

void cfg_spot_opts(const cfg *c, spot_opts *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->provider, sizeof o->provider, "%s", c->provider);
    o->poll_seconds = c->poll_seconds;
    o->grace_seconds = c->grace_seconds;
    snprintf(o->metadata_url, sizeof o->metadata_url, "%s", c->metadata_url);
    snprintf(o->notice_file, sizeof o->notice_file, "%s", c->notice_file);
    snprintf(o->vm_name, sizeof o->vm_name, "%s", c->vm_name);
}

int cfg_memplan(const cfg *c, const model_shape *s, int cuda, int world, memplan_cfg *m)
{
    cuda_prec p = CUDA_BF16;
    memset(m, 0, sizeof *m);
    /* auto plans none here; memplan_choose_recompute makes the choice. */
    int rc = !strcmp(c->recompute, "auto") ? MEMPLAN_RECOMPUTE_NONE : memplan_recompute_parse(c->recompute);
    if (rc < 0)
        return util_fail(ST_CONFIG, "%s: train.recompute = '%s' is not one of none|layers|auto", c->path,
                         c->recompute);
    /* The CPU backend computes in fp32 whatever the setting; auto is bf16 on a GPU. */
    if (cuda && cuda_prec_parse(c->precision, &p))
        return util_fail(ST_CONFIG, "%s: train.precision = '%s' is not one of auto|fp32|tf32|bf16|fp16", c->path,
                         c->precision);
    m->shape = *s;
    m->backend = cuda ? MEMPLAN_CUDA : MEMPLAN_CPU;
    m->precision = cuda ? (memplan_prec)p : MEMPLAN_FP32;
    m->world = world > 0 ? world : 1;
    m->ranks_per_node = c->gpus_per_node > 0 ? (int)c->gpus_per_node : 1;
    m->micro_batch = c->micro_batch;
    m->threads = (int)c->threads;
    m->recompute = (memplan_recompute)rc;
    /* "1" | "2" | "3" (validated); auto is refused before a plan is asked
     * for, so it plans stage 1 here, as the trainer did before zero. */
    m->zero = !strcmp(c->zero, "auto") ? MEMPLAN_ZERO1 : atoi(c->zero);
    m->comm_chunk = comm_get_chunk();
    m->overlap = strcmp(c->comm_overlap, "false") != 0;
    m->reduce = comm_reduce_parse(c->comm_reduce) == COMM_REDUCE_NCCL ? COMM_REDUCE_NCCL : COMM_REDUCE_CHAIN;
    /* The writer as the trainer opens it (train/loop.c trainer_hparams). */
    m->ckpt_codec = ckpt_codec_from_name(c->ckpt_codec);
    m->ckpt_level = (int)c->ckpt_level;
    m->ckpt_threads = (int)c->ckpt_threads;
    m->ckpt_chunk = (size_t)c->ckpt_chunk_kib * 1024;
    return ST_OK;
}

int cfg_memplan_gpu(const cfg *c, const model_shape *s, int world, double gpu_gib, memplan_cfg *m,
                    memplan_bytes *out)
{
    int autorc = !strcmp(c->recompute, "auto");
    uint64_t avail = gpu_gib > 0 ? (uint64_t)(gpu_gib * 1024.0 * 1024.0 * 1024.0) : 0;
    int autoz = !strcmp(c->zero, "auto") && avail > 0;
    int rc = cfg_memplan(c, s, 1, world, m);
    if (rc != ST_OK)
        return rc;
    return autoz && autorc ? memplan_choose_zero_recompute(m, avail, out)
           : autoz         ? memplan_choose_zero(m, avail, out)
           : autorc        ? memplan_choose_recompute(m, avail, out)
                           : memplan_compute(m, out);
}

/* The per-GPU plan --dry-run --world nodes*gpus_per_node prints for this
 * config: the same input through the same function. */
static void cfg_cost_memplan(const cfg *c, const model_shape *s, cost_opts *o)
{
    int64_t gpus = c->nodes * c->gpus_per_node;
    o->have_mem = 1;
    double gib = c->gpu_memory_gib > 0 ? c->gpu_memory_gib : cost_gpu_memory_gib(c->gpu);
    o->mem_status = cfg_memplan_gpu(c, s, gpus > 0 && gpus <= INT32_MAX ? (int)gpus : 1, gib, &o->mem_cfg, &o->mem);
    if (o->mem_status != ST_OK)
        snprintf(o->mem_why, sizeof o->mem_why, "%s", util_last_error());
}

int cfg_cost_opts(const cfg *c, cost_opts *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->source, sizeof o->source, "%s", c->path);
    o->nodes = c->nodes;
    o->ondemand_nodes = c->ondemand_nodes;
    o->gpus_per_node = c->gpus_per_node;
    snprintf(o->gpu, sizeof o->gpu, "%s", c->gpu);
    o->peak_tflops = c->peak_tflops;
    o->mfu = c->mfu;
    o->tokens = c->tokens;
    o->ondemand_hours = c->ondemand_hours;
    o->spot_hours = c->spot_hours;
    o->throughput_ratio = c->throughput_ratio;
    o->interruptions_per_hour = c->interruptions_per_hour;
    o->restart_minutes = c->restart_minutes;
    o->ckpt_stall_seconds = c->ckpt_stall_seconds;
    o->ckpt_interval_minutes = c->ckpt_interval_minutes;
    o->gpu_memory_gib = c->gpu_memory_gib;
    o->network_gbps = c->network_gbps;
    memcpy(o->prices, c->prices, (size_t)c->n_prices * sizeof *o->prices);
    o->n_prices = c->n_prices;
    /* The defaults (8 h100, the tiny preset) describe no one's plan. */
    o->hardware_given = cfg_is_given(c, "cost", "gpu") || cfg_is_given(c, "cost", "gpus_per_node") ||
                        cfg_is_given(c, "cost", "peak_tflops");
    o->overheads_given = cfg_is_given(c, "cost", "interruptions_per_hour") ||
                         cfg_is_given(c, "cost", "restart_minutes") ||
                         cfg_is_given(c, "cost", "ckpt_stall_seconds");
    if (cfg_is_given(c, "model", NULL)) {
        model_shape s;
        int rc = model_shape_from_cfg(&s, c);
        if (rc)
            return rc;
        snprintf(o->model, sizeof o->model, "%s", c->preset);
        o->params = model_count_params(&s);
        o->flops_per_token = model_flops_per_token(&s);
        o->tokens_per_step = (double)c->global_batch * (double)s.seq_len;
        o->global_batch = c->global_batch;
        o->micro_batch = c->micro_batch;
        cfg_cost_memplan(c, &s, o);
    }
    return ST_OK;
}

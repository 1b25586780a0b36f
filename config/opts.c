/* A loaded cfg as spot/'s and money/'s option structs: which keys each
 * concept reads, and which of them the user gave (a cost estimate prints
 * only what its input determines). */
#include "opts.h"

#include <stdio.h>
#include <string.h>

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
    }
    return ST_OK;
}

"""bench/s3.sh's A/B measurement: the same checkpoint files moved through
spotrain's S3 client and through boto3's transfer manager to one server, in
one run, with the wall time and CPU seconds of each side.

  s3ab.py LABEL ENDPOINT BUCKET STEP_DIR S3TOOL SPOTRAIN REPS OUT.json CHUNK

spotrain upload = tests/s3tool put per file (s3/s3.c's s3_upload_fd, what
the trainer's uploader calls); spotrain download = `spotrain ckpt verify` of
the uploaded step (the resume reader: parallel ranged GETs, every chunk's
checksum, zstd decoding); spotrain get = one ranged GET of the shard into
memory (s3tool get KEY 0 LEN -: the transport alone). boto3 = upload_file / download_file with the default
TransferConfig (8 MiB parts, 10 threads). Each figure is the median of REPS
runs, spotrain and boto3 alternating so drift hits both alike. boto3 also
downloads with parts of CHUNK bytes, the size of the reader's ranged GETs
(the checkpoint's chunk size): a server whose cost is per request (moto
reads the whole object for each) then sees the same requests from both.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
from boto3.s3.transfer import TransferConfig


def child(cmd, env):
    """Runs cmd; returns (wall seconds, CPU seconds of the child)."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise SystemExit("s3ab: %s failed (exit %d): %s" % (" ".join(cmd[:3]), p.returncode, err.strip()[-300:]))
    return wall, ru.ru_utime + ru.ru_stime


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    label, endpoint, bucket, step_dir, s3tool, spotrain, reps, out, chunk = sys.argv[1:10]
    reps, same = int(reps), TransferConfig(multipart_chunksize=int(chunk))
    step = os.path.basename(step_dir.rstrip("/"))
    names = sorted(n for n in os.listdir(step_dir) if n.startswith("shard-")) + ["manifest.json"]
    files = [os.path.join(step_dir, n) for n in names]
    nbytes = sum(os.path.getsize(f) for f in files)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    env = dict(os.environ, S3_ENDPOINT=endpoint, S3_REMOTE="s3://%s/sp" % bucket)
    res = {k: [] for k in ("sp_up", "b3_up", "sp_down", "b3_down", "b3_same", "sp_get")}

    def sp_up():
        w = c = 0.0
        for n, f in zip(names, files):   # manifest last, as the trainer does
            dw, dc = child([s3tool, "put", "sp/%s/%s" % (step, n), f], env)
            w, c = w + dw, c + dc
        return w, c

    def b3_up():
        t, c = time.monotonic(), self_cpu()
        for n, f in zip(names, files):
            s3.upload_file(f, bucket, "b3/%s/%s" % (step, n))
        return time.monotonic() - t, self_cpu() - c

    def sp_down():
        return child([spotrain, "ckpt", "verify", "s3://%s/sp/%s" % (bucket, step), "--endpoint", endpoint], env)

    def sp_get():
        return child([s3tool, "get", "sp/%s/%s" % (step, names[0]), "0", str(os.path.getsize(files[0])), "-"], env)

    def b3_down(d, cfg=None):
        t, c = time.monotonic(), self_cpu()
        for n in names:   # what spotrain uploaded, read by the other client
            s3.download_file(bucket, "sp/%s/%s" % (step, n), os.path.join(d, n), Config=cfg)
        return time.monotonic() - t, self_cpu() - c

    with tempfile.TemporaryDirectory() as d:
        for _ in range(reps):
            res["sp_up"].append(sp_up())
            res["b3_up"].append(b3_up())
            res["sp_down"].append(sp_down())
            res["b3_down"].append(b3_down(d))
            res["sp_get"].append(sp_get())
            res["b3_same"].append(b3_down(d, same))
            for n, f in zip(names, files):
                with open(f, "rb") as a, open(os.path.join(d, n), "rb") as b:
                    if a.read() != b.read():
                        raise SystemExit("s3ab: %s: boto3 read back other bytes than spotrain uploaded" % n)

    fig = {"label": label, "bytes": nbytes}
    for k, v in res.items():
        b = os.path.getsize(files[0]) if k == "sp_get" else nbytes
        w = statistics.median(x[0] for x in v)
        c = statistics.median(x[1] for x in v)
        fig[k] = {"mb_s": b / w / 1e6, "cpu_s_per_gb": c / (b / 1e9), "wall": w, "cpu": c, "bytes": b}
    for d, what in (("up", "upload  "), ("down", "download")):
        sp, b3 = fig["sp_" + d], fig["b3_" + d]
        print("%-8s %s spotrain %7.1f MB/s %5.2f cpu-s/GB | boto3 %7.1f MB/s %5.2f cpu-s/GB | spotrain/boto3 %5.2fx"
              % (label, what, sp["mb_s"], sp["cpu_s_per_gb"], b3["mb_s"], b3["cpu_s_per_gb"],
                 sp["mb_s"] / b3["mb_s"]))
    sp, b3 = fig["sp_down"], fig["b3_same"]
    print("%-8s download spotrain %7.1f MB/s %5.2f cpu-s/GB | boto3 %7.1f MB/s %5.2f cpu-s/GB | spotrain/boto3 %5.2fx"
          " (boto3 in %d MiB parts, the reader's GET size)" % (label, sp["mb_s"], sp["cpu_s_per_gb"], b3["mb_s"],
                                                                b3["cpu_s_per_gb"], sp["mb_s"] / b3["mb_s"], int(chunk) >> 20))
    g = fig["sp_get"]
    print("%-8s get      spotrain %7.1f MB/s %5.2f cpu-s/GB (transport only: one GET of the shard into memory)"
          % (label, g["mb_s"], g["cpu_s_per_gb"]))
    with open(out, "w") as f:
        json.dump(fig, f)


main()

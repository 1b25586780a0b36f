# An independent reference for interval_rate (train/interval.c): the mean
# of the posterior of a Poisson rate under a log-normal prior of mean p and
# spread s, by a sum over 20001 points in ln r (the C code uses 2048 on a
# differently chosen range). tests/unit/test_interval.c holds its output.
# module: train
import math
import sys


def rate(n, hours, p, s=2.5):
    mu = math.log(p) - s * s / 2
    lo, hi = mu - 10 * s, mu + 10 * s
    k = 20001
    xs = [lo + (hi - lo) * i / (k - 1) for i in range(k)]
    lw = [n * x - math.exp(x) * hours - (x - mu) ** 2 / (2 * s * s) for x in xs]
    top = max(lw)
    w = [math.exp(v - top) for v in lw]
    return sum(wi * math.exp(x) for wi, x in zip(w, xs)) / sum(w)


if __name__ == "__main__":
    for n, minutes, p in [(0, 0.5, 60), (0, 60, 0.05), (1, 1, 0.05), (2, 2, 0.05), (1, 1, 60), (1, 600, 0.05)]:
        r = rate(n, minutes / 60, p)
        sys.stdout.write("n=%d h=%g min p=%g: rate %.6g /h, M %.6g min\n" % (n, minutes, p, r, 60 / r))

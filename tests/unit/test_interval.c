/* checkpoint.interval_seconds = auto: the rate blend, Young/Daly with its
 * bounds, the measured save cost, and the hard failures read from a ledger.
 * module: train */
#include "tests/harness.h"
#include "train/interval.h"

#include <math.h>
#include <string.h>

static int near(double a, double b) { return fabs(a - b) <= 1e-9 * (fabs(b) + 1); }

static int rel(double a, double b, double tol) { return fabs(a - b) <= tol * fabs(b); }

static void test_rate(void)
{
    /* Nothing seen yet: the prior's mean. */
    EXPECT(rel(interval_rate(0, 0, 0.05), 0.05, 1e-3));
    EXPECT(rel(interval_rate(0, -1, 0.05), 0.05, 1e-3));   /* a clock gone backwards is no time */
    /* Against an independent sum (tests/ref/interval_ref.py, 20001 points). */
    EXPECT(rel(interval_rate(0, 0.5 / 60, 60), 9.60742, 2e-3));   /* a told 60/h, 30 s without a kill */
    EXPECT(rel(interval_rate(0, 1, 0.05), 0.0208517, 2e-3));     /* an hour without one */
    EXPECT(rel(interval_rate(1, 1.0 / 60, 0.05), 4.46307, 2e-3)); /* a kill a minute in, 20 h prior */
    EXPECT(rel(interval_rate(2, 2.0 / 60, 0.05), 19.4407, 2e-3)); /* two in two minutes */
    EXPECT(rel(interval_rate(1, 1.0 / 60, 60), 39.9198, 2e-3));   /* the told rate, confirmed */
    EXPECT(rel(interval_rate(1, 10, 0.05), 0.058493, 2e-3));      /* one in ten hours */
    /* Failure-free hours lower the rate; each kill raises it. */
    EXPECT(interval_rate(0, 0.2, 0.05) < interval_rate(0, 0.1, 0.05));
    EXPECT(interval_rate(3, 3.0 / 60, 0.05) > interval_rate(2, 3.0 / 60, 0.05));
    /* Many failures: the observation, whatever the prior. */
    double r100 = interval_rate(100, 100.0 / 60, 0.05);
    EXPECT(r100 > 0.9 * 60 && r100 < 60);
    EXPECT(rel(interval_rate(100, 100.0 / 60, 1000), 60, 0.1));
    /* Kills before any training time still give a finite rate. */
    EXPECT(isfinite(interval_rate(3, 0, 0.05)) && interval_rate(3, 0, 0.05) > 1000);
    /* No prior: the observed rate alone, and no failures means none. */
    EXPECT(fabs(interval_rate(3, 1.5, 0) - 2) < 1e-12);
    EXPECT(interval_rate(0, 1.5, 0) == 0);
}

static double yd(double c, double m, double lo, double hi)
{
    interval_by by;
    return interval_choose(c, m, 0, lo, hi, &by);
}

static void test_young_daly(void)
{
    EXPECT(near(yd(2, 100, 1, 1000), 20));
    EXPECT(near(yd(2, 100, 30, 1000), 30));   /* clamped up */
    EXPECT(near(yd(2, 1e9, 1, 600), 600));    /* clamped down */
    EXPECT(near(yd(2, INFINITY, 1, 600), 600));
    EXPECT(near(yd(0, 100, 1, 600), 1));      /* a free save: as often as allowed */
}

/* The overhead cap: C / b where that is shorter than Young/Daly, and what
 * set the interval, named for the ledger. */
static void test_overhead(void)
{
    interval_by by;
    /* C 12 ms against a 20 h M: Young/Daly 41.6 s, the 0.5% cap 2.4 s. */
    EXPECT(near(interval_choose(0.012, 72000, 0.005, 1, 3600, &by), 2.4) && by == INTERVAL_BY_OVERHEAD);
    EXPECT(near(interval_choose(0.012, 72000, 0, 1, 3600, &by), sqrt(2 * 0.012 * 72000)) &&
           by == INTERVAL_BY_YOUNG_DALY);
    /* Kills a minute apart: Young/Daly (1.2 s) is shorter than the cap. */
    EXPECT(near(interval_choose(0.012, 60, 0.005, 0.1, 3600, &by), 1.2) && by == INTERVAL_BY_YOUNG_DALY);
    /* A 7B-sized save (5 s) against 20 h: Young/Daly 849 s, the cap 1000 s. */
    EXPECT(near(interval_choose(5, 72000, 0.005, 10, 3600, &by), sqrt(2 * 5 * 72000)) &&
           by == INTERVAL_BY_YOUNG_DALY);
    /* No failures expected: the cap alone, then the bounds. */
    EXPECT(near(interval_choose(5, INFINITY, 0.005, 10, 3600, &by), 1000) && by == INTERVAL_BY_OVERHEAD);
    EXPECT(near(interval_choose(5, INFINITY, 0, 10, 3600, &by), 3600) && by == INTERVAL_BY_MAX);
    EXPECT(near(interval_choose(0.001, 72000, 0.005, 10, 3600, &by), 10) && by == INTERVAL_BY_MIN);
    EXPECT(!strcmp(interval_by_name(INTERVAL_BY_OVERHEAD), "overhead") &&
           !strcmp(interval_by_name(INTERVAL_BY_YOUNG_DALY), "young_daly") &&
           !strcmp(interval_by_name(INTERVAL_BY_MIN), "min_seconds") &&
           !strcmp(interval_by_name(INTERVAL_BY_MAX), "max_seconds"));
    /* Where the cap binds, the loss per hour C/T + T/(2M) is at most b
     * above Young/Daly's own: the insurance is bounded. */
    double c = 0.012, m = 72000, b = 0.005;
    double t = interval_choose(c, m, b, 0.1, 3600, &by), t0 = sqrt(2 * c * m);
    EXPECT(c / t + t / (2 * m) - (c / t0 + t0 / (2 * m)) <= b);
    /* ...and against a kill a minute, it loses far less than Young/Daly
     * for the wrong M: a kill costs at most T of work. */
    EXPECT(c / t + t / 120 < 0.5 * (c / t0 + t0 / 120));
}

static void test_save_cost(void)
{
    EXPECT(near(interval_save_cost(0.1, 2, 100, 100), 0.1));       /* the writer costs steps nothing */
    EXPECT(near(interval_save_cost(0.1, 2, 100, 125), 0.1 + 0.4)); /* steps 25% slower for 2 s */
    EXPECT(near(interval_save_cost(0.1, 2, 100, 90), 0.1));        /* noise below idle: no credit */
}

static void test_ledger(void)
{
    const char *text =
        "{\"ts\":1,\"event\":\"start\",\"step\":0}\n"
        "{\"ts\":2,\"event\":\"step\",\"step\":5}\n"                          /* killed: no exit */
        "{\"ts\":3,\"event\":\"start\",\"step\":0,\"failed\":true,\"code\":64}\n"
        "{\"ts\":3,\"event\":\"exit\",\"step\":0,\"code\":64}\n"
        "{\"ts\":4,\"event\":\"start\",\"step\":4}\n"
        "{\"ts\":5,\"event\":\"stop\",\"step\":9,\"durable_step\":9,\"final_checkpoint\":\"ok\"}\n"
        "{\"ts\":6,\"event\":\"exit\",\"step\":9,\"code\":75}\n"
        "{\"ts\":7,\"event\":\"start\",\"step\":9}\n"
        "{\"ts\":8,\"event\":\"stop\",\"step\":12,\"durable_step\":9,\"final_checkpoint\":\"failed\"}\n"
        "{\"ts\":9,\"event\":\"exit\",\"step\":12,\"code\":75}\n"
        "{\"ts\":10,\"event\":\"start\",\"step\":9}\n"
        "{\"ts\":11,\"event\":\"stop\",\"step\":10,\"durable_step\":9,\"final_checkpoint\":\"skipped\"}\n"
        "{\"ts\":12,\"event\":\"exit\",\"step\":10,\"code\":75}\n"
        "{\"ts\":13,\"event\":\"start\",\"step\":9}\n";                        /* the running segment */
    EXPECT(interval_ledger_failures(text, strlen(text)) == 3);
    EXPECT(interval_ledger_failures("", 0) == 0);
}

static void test_ledger_cost(void)
{
    const char *text =
        "{\"ts\":1,\"event\":\"start\",\"step\":0}\n"
        "{\"ts\":1,\"event\":\"interval\",\"step\":0,\"seconds\":848.5,\"cost_s\":5.000000,"
        "\"cost_measured\":false,\"mtbf_s\":72000.0,\"hard_failures\":0,\"hours\":0.0}\n"
        "{\"ts\":2,\"event\":\"interval\",\"step\":3,\"seconds\":37.9,\"cost_s\":0.012300,"
        "\"cost_measured\":true,\"mtbf_s\":72000.0,\"hard_failures\":0,\"hours\":0.0}\n"
        "{\"ts\":3,\"event\":\"start\",\"step\":3}\n"
        "{\"ts\":3,\"event\":\"interval\",\"step\":3,\"seconds\":4.1,\"cost_s\":0.045600,"
        "\"cost_measured\":true,\"mtbf_s\":780.0,\"hard_failures\":1,\"hours\":0.01}\n"
        "{\"ts\":4,\"event\":\"interval\",\"step\":9,\"seconds\":4.1,\"cost_s\":\"x\","
        "\"cost_measured\":true}\n"                                       /* unreadable: ignored */
        "{\"ts\":5,\"event\":\"step\",\"step\":10,\"cost_s\":9,\"cost_measured\":true}\n";  /* not an interval line */
    EXPECT(near(interval_ledger_cost(text, strlen(text)), 0.0456));
    const char *prior_only =
        "{\"ts\":1,\"event\":\"interval\",\"step\":0,\"seconds\":848.5,\"cost_s\":5.000000,"
        "\"cost_measured\":false,\"mtbf_s\":72000.0,\"hard_failures\":0,\"hours\":0.0}";   /* no newline */
    EXPECT(interval_ledger_cost(prior_only, strlen(prior_only)) == -1);
    EXPECT(interval_ledger_cost("", 0) == -1);
}

static void test_probe(void)
{
    interval_auto a;
    interval_init(&a, 1, 3600, 0, 0.05, 5);
    EXPECT(interval_due(&a, 0.5) == 0);
    interval_step(&a, 900, 0);                             /* warm-up: not in the mean */
    for (int i = 0; i < INTERVAL_PROBE_STEPS - 1; i++)
        interval_step(&a, 100, 0);
    EXPECT(interval_due(&a, 0.5) == 0);                    /* too few steps to compare against */
    interval_step(&a, 100, 0);
    EXPECT(near(a.idle_ms, 100));
    EXPECT(interval_due(&a, 0.5) == 1);                    /* C unknown: save now to measure it */
    EXPECT(interval_due(&a, 0.6) == 0);                    /* once */
    EXPECT(interval_due(&a, a.interval_s) == 1);           /* then by the interval */
    /* A C carried over from the ledger needs no probe. */
    interval_init(&a, 1, 3600, 0, 0.05, 5);
    interval_resume(&a, 1, 0.5, 0.02);
    EXPECT(a.cost_s == 0.02 && a.hard_failures == 1 && a.hours_before == 0.5);
    for (int i = 0; i < 10; i++)
        interval_step(&a, 100, 0);
    EXPECT(interval_due(&a, 0.5) == 0);
}

static void test_update(void)
{
    interval_auto a;
    double c, m;
    int measured;
    interval_init(&a, 5, 3600, 0, 0.05, 5);
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(near(c, 5) && !measured && fabs(m - 72000) < 72 && near(a.interval_s, sqrt(2 * 5 * m)));
    for (int i = 0; i < 30; i++)
        interval_step(&a, 100, 0);
    for (int i = 0; i < 30; i++)
        interval_step(&a, 110, 1);
    interval_saved(&a, 0.05, 1.0);
    double x1 = 0.05 + 1.0 * (1 - 100.0 / 110);
    EXPECT(fabs(a.cost_s - x1) < 1e-9);
    EXPECT(interval_update(&a, 0, &c, &m, &measured) == 1 && measured);   /* a measured C moves it */
    EXPECT(a.interval_s >= 5 && a.interval_s < 1000);
    double before = a.interval_s;
    EXPECT(interval_update(&a, 0, &c, &m, &measured) == 0 && a.interval_s == before);
    /* C is the mean of the newest four saves' figures. */
    interval_saved(&a, 0.01, 0);
    EXPECT(fabs(a.cost_s - (x1 + 0.01) / 2) < 1e-9);
    for (int i = 0; i < 40; i++)
        interval_saved(&a, 0.01, 0);
    EXPECT(fabs(a.cost_s - 0.01) < 1e-6);
    interval_saved(&a, 0.05, 0);
    EXPECT(fabs(a.cost_s - (0.01 + 0.04 / 4)) < 1e-6);
    a.hard_failures = 30;
    a.hours_before = 0.5;                                 /* a kill a minute for half an hour */
    EXPECT(interval_update(&a, 0, &c, &m, &measured) == 1 && m > 60 && m < 90 && a.interval_s == 5);

    /* The first measured C is worth a ledger line even when the bounds
     * keep the interval where it was, so the next segment starts from it. */
    interval_init(&a, 1, 10, 0, 0.05, 5);
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(a.interval_s == 10);
    interval_saved(&a, 0.05, 0);
    EXPECT(interval_update(&a, 0, &c, &m, &measured) == 1 && measured && near(c, 0.05) && a.interval_s == 10);
    EXPECT(interval_update(&a, 0, &c, &m, &measured) == 0);
}

/* The case a fixed prior gets wrong: a 20 h prior, a measured C of 10 ms,
 * then kills a minute apart. Before the first kill the interval is the
 * prior's (sqrt(2 · 0.01 · 72000) = 38 s); one kill in one minute gives
 * M of 13.4 min (tests/ref/interval_ref.py), two in two minutes 3.1 min, and
 * the interval follows. A told rate of 60/h starts where the data ends up. */
static void test_first_kill(void)
{
    interval_auto a;
    double c, m;
    int measured;
    interval_init(&a, 1, 3600, 0, 0.05, 5);
    a.cost_s = 0.01;
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(fabs(a.interval_s - sqrt(2 * 0.01 * 72000)) < 0.05);
    interval_init(&a, 1, 3600, 0, 0.05, 5);
    a.cost_s = 0.01;
    a.hard_failures = 1;
    a.hours_before = 1.0 / 60;
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(fabs(m - 13.4437 * 60) < 3 && fabs(a.interval_s - sqrt(2 * 0.01 * m)) < 1e-9);
    a.hard_failures = 2;
    a.hours_before = 2.0 / 60;
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(fabs(m - 3.08631 * 60) < 1 && a.interval_s > 1.8 && a.interval_s < 2.0);
    interval_init(&a, 1, 3600, 0, 60, 5);
    a.cost_s = 0.01;
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(fabs(m - 60) < 0.1 && a.interval_s > 1.05 && a.interval_s < 1.15);
    /* With the default 0.5% overhead cap the uninformed run saves every
     * 2 s (C / 0.005) before its first kill, not every 38 s; after four
     * kills in four minutes Young/Daly is shorter and takes over. */
    interval_init(&a, 1, 3600, 0.005, 0.05, 5);
    a.cost_s = 0.01;
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(near(a.interval_s, 2) && a.by == INTERVAL_BY_OVERHEAD);
    a.hard_failures = 4;
    a.hours_before = 4.0 / 60;
    interval_update(&a, 0, &c, &m, &measured);
    EXPECT(a.interval_s < 1.5 && near(a.interval_s, sqrt(2 * 0.01 * m)) && a.by == INTERVAL_BY_YOUNG_DALY);
}

int main(void)
{
    harness_run("rate: log-normal prior, posterior mean against an independent sum", test_rate);
    harness_run("young/daly within bounds", test_young_daly);
    harness_run("overhead cap: cheap saves taken more often, what set the interval", test_overhead);
    harness_run("save cost: stall plus measured slowdown", test_save_cost);
    harness_run("hard failures from a ledger", test_ledger);
    harness_run("measured C from a ledger", test_ledger_cost);
    harness_run("probe: one early save measures C", test_probe);
    harness_run("update", test_update);
    harness_run("a kill in the first minute moves the interval", test_first_kill);
    return harness_end();
}

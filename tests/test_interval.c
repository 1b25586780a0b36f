/* checkpoint.interval_seconds = auto: the rate blend, Young/Daly with its
 * bounds, the measured save cost, and the hard failures read from a ledger. */
#include "harness.h"
#include "../train/interval.h"

#include <math.h>
#include <string.h>

static int near(double a, double b) { return fabs(a - b) <= 1e-9 * (fabs(b) + 1); }

static void test_rate(void)
{
    EXPECT(near(interval_rate(0, 5, 0.05), 0.05));        /* nothing seen: the prior */
    EXPECT(near(interval_rate(1, 10, 0.05), (0.1 + 0.05) / 2));
    /* Five kills in five minutes outweigh a prior of one per 20 hours. */
    double r = interval_rate(5, 5.0 / 60, 0.05);
    EXPECT(r > 40 && r < 60);
}

static void test_young_daly(void)
{
    EXPECT(near(interval_young_daly(2, 100, 1, 1000), 20));
    EXPECT(near(interval_young_daly(2, 100, 30, 1000), 30));   /* clamped up */
    EXPECT(near(interval_young_daly(2, 1e9, 1, 600), 600));    /* clamped down */
    EXPECT(near(interval_young_daly(2, INFINITY, 1, 600), 600));
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

static void test_update(void)
{
    interval_auto a;
    double c, m;
    interval_init(&a, 5, 3600, 0.05, 5);
    interval_update(&a, 0, &c, &m);
    EXPECT(near(c, 5) && near(m, 72000) && near(a.interval_s, sqrt(2 * 5 * 72000.0)));
    for (int i = 0; i < 30; i++)
        interval_step(&a, 100, 0);
    for (int i = 0; i < 30; i++)
        interval_step(&a, 110, 1);
    interval_saved(&a, 0.05, 1.0);
    EXPECT(fabs(a.cost_s - (0.05 + 1.0 * (1 - 100.0 / 110))) < 1e-9);
    EXPECT(interval_update(&a, 0, &c, &m) == 1);           /* a measured C moves it */
    EXPECT(a.interval_s >= 5 && a.interval_s < 1000);
    double before = a.interval_s;
    EXPECT(interval_update(&a, 0, &c, &m) == 0 && a.interval_s == before);
    a.hard_failures = 6;
    a.hours_before = 0.1;                                 /* a kill a minute */
    EXPECT(interval_update(&a, 0, &c, &m) == 1 && m < 120 && a.interval_s == 5);
}

int main(void)
{
    harness_run("rate: prior blended by failures seen", test_rate);
    harness_run("young/daly within bounds", test_young_daly);
    harness_run("save cost: stall plus measured slowdown", test_save_cost);
    harness_run("hard failures from a ledger", test_ledger);
    harness_run("update", test_update);
    return harness_end();
}

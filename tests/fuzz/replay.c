/* The libFuzzer targets (tests/fuzz/fuzz_*.c) without libFuzzer: make test
 * links each target with this driver and replays its committed corpus
 * (tests/fuzz/corpus/NAME/) through it, each input in a child of its own so
 * a crash, a sanitizer report, a leak or a hang names the file and the other
 * inputs still run. Arguments are files or directories of them; the output
 * ends with "N passed, N failed", one check per input. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as in libFuzzer: only fuzz_ckpt has one. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* A hang guard, not a timing: libFuzzer's own -timeout in `make fuzz` is 10 s. */
#define REPLAY_HANG_SECONDS 300

typedef struct {
    int pass, fail;
} replay_tally;

static int replay_slurp(const char *path, uint8_t **out, size_t *len)
{
    int rc = -1;
    uint8_t *buf = NULL;
    long n;
    FILE *f = fopen(path, "rb");
    if (!f)
        goto exit;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto exit;
    /* Exactly the input's size (malloc(0) may be NULL): ASan then sees a
     * read one past the end, as under libFuzzer. */
    buf = malloc(n ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        goto exit;
    *out = buf;
    *len = (size_t)n;
    buf = NULL;
    rc = 0;
exit:
    free(buf);
    if (f)
        fclose(f);
    return rc;
}

/* The child's whole life: what libFuzzer does for one input. */
static int replay_child(const char *path, int argc, char **argv)
{
    uint8_t *data;
    size_t len;
    alarm(REPLAY_HANG_SECONDS);
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    if (replay_slurp(path, &data, &len) != 0) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
        return 2;
    }
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

static void replay_one(const char *path, int argc, char **argv, replay_tally *t)
{
    int st = 0;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        exit(replay_child(path, argc, argv)); /* exit, not _exit: LeakSanitizer checks at exit */
    if (pid < 0 || waitpid(pid, &st, 0) != pid) {
        printf("FAIL %s: could not run it: %s\n", path, strerror(errno));
        t->fail++;
    } else if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        printf("FAIL %s: killed by signal %d (%s)%s\n", path, sig, strsignal(sig),
               sig == SIGALRM ? ", a hang" : "");
        t->fail++;
    } else if (WEXITSTATUS(st) != 0) {
        printf("FAIL %s: exited %d (a sanitizer report or a leak above)\n", path, WEXITSTATUS(st));
        t->fail++;
    } else {
        t->pass++;
    }
}

static int replay_visible(const struct dirent *e) { return e->d_name[0] != '.'; }

/* A directory's entries in name order, so a run reads the same every time. */
static void replay_dir(const char *dir, int argc, char **argv, replay_tally *t)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, replay_visible, alphasort);
    if (n < 0) {
        printf("FAIL %s: cannot list it: %s\n", dir, strerror(errno));
        t->fail++;
        return;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        replay_one(path, argc, argv, t);
        free(ents[i]);
    }
    free(ents);
}

int main(int argc, char **argv)
{
    replay_tally t = {0, 0};
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (d) {
            closedir(d);
            replay_dir(argv[i], argc, argv, &t);
        } else {
            replay_one(argv[i], argc, argv, &t);
        }
    }
    if (t.pass + t.fail == 0) {
        printf("FAIL %s: no inputs (usage: %s FILE|DIR...)\n", name, name);
        t.fail++;
    } else if (t.fail == 0) {
        printf("ok   %s: %d inputs replayed\n", name, t.pass);
    }
    printf("%d passed, %d failed\n", t.pass, t.fail);
    return t.fail != 0;
}

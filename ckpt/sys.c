/* The file-system calls of the checkpoint code, as one replaceable table:
 * the real calls by default, a test's fakes while it injects faults. */
#include "ckpt_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int ckpt_sys_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }

static int ckpt_sys_sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    return sync_file_range(fd, off, n, flags);
}

const ckpt_sys ckpt_sys_real = {
    .open = ckpt_sys_open,
    .close = close,
    .write = write,
    .pwrite = pwrite,
    .fsync = fsync,
    .fdatasync = fdatasync,
    .sync_file_range = ckpt_sys_sync_file_range,
    .rename = rename,
    .unlink = unlink,
    .mkdir = mkdir,
    .rmdir = rmdir,
    .opendir = opendir,
};

const ckpt_sys *ckpt_os = &ckpt_sys_real;

void ckpt_sys_replace(const ckpt_sys *with)
{
    ckpt_os = with ? with : &ckpt_sys_real;
}

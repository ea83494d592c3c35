// openat2(2) for Swift: glibc has no wrapper and Swift cannot call the variadic syscall(2).
#ifndef SIGMA_CROOTEDFS_H
#define SIGMA_CROOTEDFS_H

#include <stdint.h>

// The RESOLVE_* flags of <linux/openat2.h>, as constants Swift can import.
static const uint64_t SIGMA_RESOLVE_NO_XDEV = 0x01;
static const uint64_t SIGMA_RESOLVE_NO_MAGICLINKS = 0x02;
static const uint64_t SIGMA_RESOLVE_NO_SYMLINKS = 0x04;
static const uint64_t SIGMA_RESOLVE_BENEATH = 0x08;
static const uint64_t SIGMA_RESOLVE_IN_ROOT = 0x10;

// O_PATH of <fcntl.h>, which Glibc shows Swift only under _GNU_SOURCE.
static const int SIGMA_O_PATH = 010000000;

// openat2(dirfd, path, {flags, mode, resolve}): a file descriptor, or -1 with errno set
// (ENOSYS on a kernel older than 5.6).
int sigma_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

#endif

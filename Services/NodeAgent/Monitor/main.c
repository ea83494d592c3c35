// sigma-monitor: holds one instance's stdio and records how it ended, so both outlive the agent.
//
//   sigma-monitor --runtime PATH --root DIR --bundle DIR --id ID --dir DIR [--log-max-bytes N] [--log-keep K]
//                 [--lease FILE] [--journal FILE]
//
// The first process waits until the instance runs (or failed to start), prints "pid N" or "error TEXT" on
// stdout and exits 0 or 1. A detached child (its own session, a child subreaper) stays behind: it runs
// `RUNTIME --root DIR run --detach` with the instance's stdout/stderr on pipes, copies both into
// DIR/console.log (rotated at --log-max-bytes, keeping --log-keep old files), and when the instance's first
// process ends writes DIR/exit atomically: "exited CODE" or "signaled SIGNAL". The agent reads that file;
// nothing else about the instance lives in this process. The child holds an exclusive flock on
// DIR/monitor.lock for as long as it lives: a new start waits for it, so an earlier run's ending is never
// written over the next run's (a second monitor on the same folder refuses to start).
// Each run starts a fresh console.log: the one an earlier run wrote becomes console.previous.log (sigmactl
// logs -p). Beside each console.log, console.log.times holds "UNIX_MS OFFSET" for the first byte written in
// every second that had output (sigmactl logs --since); a rotation starts it afresh.
//
// With --lease (failover: safe) the instance lives on the node's lease: FILE holds a deadline in milliseconds
// of CLOCK_BOOTTIME, which the agent moves on after every heartbeat the scheduler granted. The instance does
// not start once the deadline has passed ("error the node's lease has lapsed"), and when it passes while the
// instance runs, this process kills it (SIGKILL to its PID 1, which ends its whole PID namespace) whether the
// agent still runs or not, and records "fenced the node's lease lapsed". The scheduler starts a copy elsewhere
// only once it is sure the deadline has passed (docs/operations.md, "At most one copy").
// With --journal, one line is appended to FILE before the runtime runs the instance ("MS start ID") and one
// as soon as it is reaped ("MS stop ID ENDING"; its PID namespace is empty by then), before the exit file the
// agent reports from is written, MS in CLOCK_BOOTTIME milliseconds: bounds of each copy's life.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *runtime, *runc_root, *bundle, *id, *dir, *lease_file, *journal_file;
static long long log_max = 10LL << 20;
static int log_keep = 3;
static int log_fd = -1, times_fd = -1;
static long long log_size = 0, times_second = -1;

static void usage(void) {
    fprintf(stderr, "usage: sigma-monitor --runtime PATH --root DIR --bundle DIR --id ID --dir DIR "
                    "[--log-max-bytes N] [--log-keep K] [--lease FILE] [--journal FILE]\n");
    exit(2);
}

static void path_in_dir(char *out, size_t size, const char *name) { snprintf(out, size, "%s/%s", dir, name); }

enum { PATH_BYTES = 8192 };

static void write_file_atomically(const char *name, const char *text) {
    char path[PATH_BYTES], temp[PATH_BYTES + 8];
    path_in_dir(path, sizeof path, name);
    snprintf(temp, sizeof temp, "%s.tmp", path);
    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t ignored = write(fd, text, strlen(text));
    (void)ignored;
    fsync(fd);
    close(fd);
    rename(temp, path);
}

static long long boot_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_BOOTTIME, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

// The lease's deadline (CLOCK_BOOTTIME ms); 0 when the file is missing or unreadable: no lease.
static long long lease_deadline(void) {
    int fd = open(lease_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char text[32];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return 0;
    text[n] = 0;
    char *end;
    long long deadline = strtoll(text, &end, 10);
    return end == text ? 0 : deadline;
}

static void journal(const char *what, const char *detail) {
    if (!journal_file) return;
    int fd = open(journal_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return;
    char line[256];
    int n = snprintf(line, sizeof line, "%lld %s %s%s%s\n", boot_ms(), what, id, *detail ? " " : "", detail);
    ssize_t ignored = write(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    (void)ignored;
    close(fd);
}

static void open_log(void) {
    char path[4096];
    path_in_dir(path, sizeof path, "console.log");
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    struct stat st;
    log_size = (log_fd >= 0 && fstat(log_fd, &st) == 0) ? st.st_size : 0;
    path_in_dir(path, sizeof path, "console.log.times");
    times_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    times_second = -1;
}

// An earlier run's non-empty log (and its times) becomes console.previous.log, replacing an older one.
static void keep_previous_log(void) {
    char log[PATH_BYTES], times[PATH_BYTES], previous[PATH_BYTES], previous_times[PATH_BYTES];
    path_in_dir(log, sizeof log, "console.log");
    path_in_dir(times, sizeof times, "console.log.times");
    path_in_dir(previous, sizeof previous, "console.previous.log");
    path_in_dir(previous_times, sizeof previous_times, "console.previous.log.times");
    struct stat st;
    if (stat(log, &st) != 0 || st.st_size == 0) return;
    unlink(previous_times);
    rename(log, previous);
    rename(times, previous_times);
}

// Notes where the first byte written in a new second of wall-clock time lands.
static void note_time(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (times_fd < 0 || now.tv_sec == times_second) return;
    times_second = now.tv_sec;
    char line[64];
    int n = snprintf(line, sizeof line, "%lld %lld\n", (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000, log_size);
    ssize_t ignored = write(times_fd, line, (size_t)n);
    (void)ignored;
}

static void rotate_log(void) {
    char from[PATH_BYTES + 16], to[PATH_BYTES + 16], base[PATH_BYTES];
    path_in_dir(base, sizeof base, "console.log");
    if (log_fd >= 0) close(log_fd);
    if (times_fd >= 0) close(times_fd);
    char times[PATH_BYTES];
    path_in_dir(times, sizeof times, "console.log.times");
    unlink(times);
    for (int i = log_keep; i >= 1; i--) {
        if (i == 1) snprintf(from, sizeof from, "%s", base);
        else snprintf(from, sizeof from, "%s.%d", base, i - 1);
        snprintf(to, sizeof to, "%s.%d", base, i);
        if (i == log_keep) unlink(to);
        rename(from, to);
    }
    if (log_keep == 0) unlink(base);
    open_log();
}

static void write_log(const char *data, size_t length) {
    if (length > 0) note_time();
    while (length > 0) {
        ssize_t n = write(log_fd, data, length);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data += n;
        length -= (size_t)n;
        log_size += n;
    }
}

// Appends to the log, rotating whenever the current file would pass --log-max-bytes; a file ends at a line's
// end when one ends in the room left.
static void append_log(const char *data, size_t length) {
    while (length > 0 && log_fd >= 0) {
        size_t piece = length;
        if (log_max > 0) {
            if (log_size >= log_max) {
                rotate_log();
                continue;
            }
            size_t room = (size_t)(log_max - log_size);
            if (piece > room) {
                const char *newline = memrchr(data, '\n', room);
                piece = newline ? (size_t)(newline - data) + 1 : room;
            }
        }
        write_log(data, piece);
        data += piece;
        length -= piece;
        if (length > 0 && log_max > 0) rotate_log();
    }
}

// Reads what is there; returns 0 at end of file.
static int drain(int fd) {
    char buffer[65536];
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) {
        append_log(buffer, (size_t)n);
        return 1;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    return 0;
}

static void report(int fd, const char *format, ...) {
    char text[8192];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    ssize_t ignored = write(fd, text, strlen(text));
    (void)ignored;
}

// The last line runc logged (its log is JSON lines with a "msg" field), for the start error.
static void last_runtime_error(char *out, size_t size) {
    char path[4096];
    path_in_dir(path, sizeof path, "runtime.log");
    snprintf(out, size, "the runtime failed");
    FILE *file = fopen(path, "r");
    if (!file) return;
    char line[4096], last[4096] = "";
    while (fgets(line, sizeof line, file))
        if (strstr(line, "\"level\":\"error\"")) snprintf(last, sizeof last, "%s", line);
    fclose(file);
    char *msg = strstr(last, "\"msg\":\"");
    if (!msg) return;
    msg += 7;
    char *end = msg;
    while (*end && !(*end == '"' && end[-1] != '\\')) end++;
    *end = 0;
    snprintf(out, size, "%s", msg);
}

static int monitor(int report_fd) {
    setsid();
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    char lock_file[4096];
    path_in_dir(lock_file, sizeof lock_file, "monitor.lock");
    int lock = open(lock_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0) {
        report(report_fd, "error another monitor still watches %s\n", dir);
        return 1;
    }
    keep_previous_log();
    open_log();

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        report(report_fd, "error pipe: %s\n", strerror(errno));
        return 1;
    }
    char pid_file[4096], runtime_log[4096];
    path_in_dir(pid_file, sizeof pid_file, "pid");
    path_in_dir(runtime_log, sizeof runtime_log, "runtime.log");
    unlink(pid_file);

    if (lease_file && lease_deadline() <= boot_ms()) {
        report(report_fd, "error the node's lease has lapsed\n");
        write_file_atomically("exit", "fenced the node's lease had lapsed before the start\n");
        return 1;
    }
    journal("start", "");
    pid_t runner = fork();
    if (runner < 0) {
        report(report_fd, "error fork: %s\n", strerror(errno));
        return 1;
    }
    if (runner == 0) {
        int null = open("/dev/null", O_RDONLY);
        dup2(null, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execl(runtime, runtime, "--root", runc_root, "--log", runtime_log, "--log-format", "json", "run",
              "--detach", "--pid-file", pid_file, "--bundle", bundle, id, (char *)NULL);
        fprintf(stderr, "cannot run %s: %s\n", runtime, strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    // The kernel's OOM killer spares this process (the runtime, forked above, and so the instance keep the
    // node's setting): with --lease it is what ends the instance, and it must outlive it.
    int adjust = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (adjust >= 0) {
        ssize_t ignored = write(adjust, "-1000", 5);
        (void)ignored;
        close(adjust);
    }
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);

    int status = 0;
    while (waitpid(runner, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char reason[4096];
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127) snprintf(reason, sizeof reason, "cannot run %s", runtime);
        else last_runtime_error(reason, sizeof reason);
        while (drain(out[0]) == 1 && errno != EAGAIN) {}
        report(report_fd, "error %s\n", reason);
        char text[4200];
        snprintf(text, sizeof text, "failed %s\n", reason);
        journal("stop", "failed");
        write_file_atomically("exit", text);
        return 1;
    }
    pid_t instance = 0;
    FILE *file = fopen(pid_file, "r");
    if (file) {
        if (fscanf(file, "%d", &instance) != 1) instance = 0;
        fclose(file);
    }
    if (instance <= 0) {
        report(report_fd, "error the runtime wrote no pid\n");
        journal("stop", "failed");
        write_file_atomically("exit", "failed the runtime wrote no pid\n");
        return 1;
    }
    report(report_fd, "pid %d\n", instance);
    close(report_fd);

    int open_pipes = 2, exited = 0, fenced = 0, journaled = 0;
    char ending[64] = "";
    struct pollfd fds[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
    for (;;) {
        pid_t child;
        while ((child = waitpid(-1, &status, WNOHANG)) > 0) {
            if (child != instance) continue;
            exited = 1;
            if (fenced) snprintf(ending, sizeof ending, "fenced the node's lease lapsed\n");
            else if (WIFSIGNALED(status)) snprintf(ending, sizeof ending, "signaled %d\n", WTERMSIG(status));
            else snprintf(ending, sizeof ending, "exited %d\n", WEXITSTATUS(status));
        }
        if (child < 0 && errno == ECHILD && !exited) {
            // Not ours to wait for (a runtime that does not reparent): watch it instead.
            if (kill(instance, 0) < 0 && errno == ESRCH) {
                exited = 1;
                snprintf(ending, sizeof ending, "unknown\n");
            }
        }
        if (exited && !journaled) {
            // The copy's life ends here, not once its output is drained (up to a poll later, or more on a
            // loaded machine): the journal's bound must not trail the exit the agent reports.
            char detail[64];
            snprintf(detail, sizeof detail, "%s", ending);
            detail[strcspn(detail, "\n")] = 0;
            journal("stop", detail);
            journaled = 1;
        }
        if (exited && open_pipes == 0) break;
        int wait_ms = exited ? 200 : 100;
        if (lease_file && !exited && !fenced) {
            long long left = lease_deadline() - boot_ms();
            if (left <= 0) {
                // The scheduler may start a copy elsewhere from now on: this one ends first.
                fenced = 1;
                kill(instance, SIGKILL);
                continue;
            }
            if (left < wait_ms) wait_ms = (int)left;
        }
        int ready = poll(fds, 2, wait_ms);
        if (ready <= 0) {
            if (exited) break;  // whatever the instance left holding its stdio, it is gone
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (!drain(fds[i].fd)) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_pipes--;
            }
        }
    }
    write_file_atomically("exit", ending);
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (i + 1 >= argc) usage();
        const char *value = argv[++i];
        if (!strcmp(flag, "--runtime")) runtime = value;
        else if (!strcmp(flag, "--root")) runc_root = value;
        else if (!strcmp(flag, "--bundle")) bundle = value;
        else if (!strcmp(flag, "--id")) id = value;
        else if (!strcmp(flag, "--dir")) dir = value;
        else if (!strcmp(flag, "--log-max-bytes")) log_max = atoll(value);
        else if (!strcmp(flag, "--log-keep")) log_keep = atoi(value);
        else if (!strcmp(flag, "--lease")) lease_file = value;
        else if (!strcmp(flag, "--journal")) journal_file = value;
        else usage();
    }
    if (!runtime || !runc_root || !bundle || !id || !dir) usage();

    int channel[2];
    if (pipe2(channel, O_CLOEXEC) < 0) {
        printf("error pipe: %s\n", strerror(errno));
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        printf("error fork: %s\n", strerror(errno));
        return 1;
    }
    if (child == 0) {
        close(channel[0]);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        // Nothing the agent had open stays open here: this process outlives it.
        if (channel[1] > 3) close_range(3, (unsigned)channel[1] - 1, 0);
        close_range((unsigned)channel[1] + 1, ~0U, 0);
        _exit(monitor(channel[1]));
    }
    close(channel[1]);
    char answer[8192];
    size_t length = 0;
    ssize_t n;
    while (length < sizeof answer - 1 && (n = read(channel[0], answer + length, sizeof answer - 1 - length)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        length += (size_t)n;
    }
    answer[length] = 0;
    if (length == 0) snprintf(answer, sizeof answer, "error the monitor ended before the instance started\n");
    fputs(answer, stdout);
    return strncmp(answer, "pid ", 4) == 0 ? 0 : 1;
}

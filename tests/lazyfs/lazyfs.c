/* lazyfs.c: an LD_PRELOAD shim for power-loss tests (docs/DESIGN.md §11, power loss).
 *
 * Every write, truncate and O_TRUNC open of a file under $LAZYFS_DIR first saves the bytes it is
 * about to overwrite (and the file's old size) to the undo log $LAZYFS_UNDO; a successful
 * fsync/fdatasync of the file marks everything before it durable. The process is then killed
 * with SIGKILL, and the test replays the undo log backwards for every file, from its end back to
 * that file's last sync: the files are left exactly as a power cut would leave them if nothing
 * un-fsynced had reached the disk. (The undo log itself survives SIGKILL in the page cache.)
 *
 * Not modelled: directory entries (creates, renames, unlinks count as durable at once) and
 * memory-mapped writes (SQLite's -shm index, which SQLite rebuilds after a crash; skipped).
 *
 * Record: u8 kind ('W' bytes overwritten, 'T' bytes truncated away, 'S' synced), u32 path length,
 * path, u64 offset, u64 old size, u64 data length, data. For 'S' the offset is the undo log's
 * length when the sync began: records of that file before it are durable.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 65536

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char *paths[MAX_FD];
static int undo_fd = -1;
static const char *dir;
static size_t dir_len;

static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pread64)(int, void *, size_t, off64_t);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void init(void) {
    static int done;
    if (done) return;
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_write = dlsym(RTLD_NEXT, "write");
    real_pread64 = dlsym(RTLD_NEXT, "pread64");
    real_open = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    dir = getenv("LAZYFS_DIR");
    const char *undo = getenv("LAZYFS_UNDO");
    if (dir && undo) {
        dir_len = strlen(dir);
        undo_fd = real_open(undo, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
    done = 1;
}

__attribute__((constructor)) static void ctor(void) { init(); }

static void put(const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = real_write(undo_fd, c, n);
        if (w <= 0) abort(); /* the test cannot be trusted without its undo log */
        c += w;
        n -= (size_t)w;
    }
}

static void record(char kind, const char *path, uint64_t off, uint64_t old_size, const void *data, uint64_t len) {
    uint32_t pl = (uint32_t)strlen(path);
    put(&kind, 1);
    put(&pl, 4);
    put(path, pl);
    put(&off, 8);
    put(&old_size, 8);
    put(&len, 8);
    if (len) put(data, len);
}

static int tracked_path(const char *p) {
    if (undo_fd < 0 || !p || strncmp(p, dir, dir_len) != 0) return 0;
    size_t n = strlen(p);
    return !(n >= 4 && strcmp(p + n - 4, "-shm") == 0);
}

static uint64_t size_of(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Save the bytes [off, off+len) of fd (those that exist) before they change. */
static void save_range(char kind, int fd, const char *path, uint64_t off, uint64_t len) {
    uint64_t old = size_of(fd);
    uint64_t have = off >= old ? 0 : (old - off < len ? old - off : len);
    char *buf = have ? malloc(have) : NULL;
    if (have && !buf) abort();
    uint64_t got = 0;
    while (got < have) {
        ssize_t r = real_pread64(fd, buf + got, have - got, (off64_t)(off + got));
        if (r <= 0) break;
        got += (uint64_t)r;
    }
    record(kind, path, off, old, buf, got);
    free(buf);
}

static void track(int fd, const char *path) {
    if (fd < 0 || fd >= MAX_FD) return;
    char full[PATH_MAX];
    if (path[0] != '/') {
        if (!getcwd(full, sizeof full)) return;
        strncat(full, "/", sizeof full - strlen(full) - 1);
        strncat(full, path, sizeof full - strlen(full) - 1);
        path = full;
    }
    if (!tracked_path(path)) return;
    pthread_mutex_lock(&mu);
    free(paths[fd]);
    paths[fd] = strdup(path);
    pthread_mutex_unlock(&mu);
}

static void before_trunc_open(int dirfd, const char *path, int flags) {
    if (!(flags & O_TRUNC) || undo_fd < 0) return;
    int fd = real_openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char full[PATH_MAX];
    const char *p = path;
    if (path[0] != '/' && getcwd(full, sizeof full)) {
        strncat(full, "/", sizeof full - strlen(full) - 1);
        strncat(full, path, sizeof full - strlen(full) - 1);
        p = full;
    }
    if (tracked_path(p)) {
        pthread_mutex_lock(&mu);
        save_range('T', fd, p, 0, size_of(fd));
        pthread_mutex_unlock(&mu);
    }
    real_close(fd);
}

static int do_open(int dirfd, const char *path, int flags, mode_t mode) {
    init();
    before_trunc_open(dirfd, path, flags);
    int fd = real_openat(dirfd, path, flags, mode);
    track(fd, path);
    return fd;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, mode);
}
int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return do_open(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return do_open(dirfd, path, flags, mode);
}

int close(int fd) {
    init();
    if (fd >= 0 && fd < MAX_FD && paths[fd]) {
        pthread_mutex_lock(&mu);
        free(paths[fd]);
        paths[fd] = NULL;
        pthread_mutex_unlock(&mu);
    }
    return real_close(fd);
}

static const char *path_of(int fd) { return (fd >= 0 && fd < MAX_FD) ? paths[fd] : NULL; }

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    init();
    const char *p = path_of(fd);
    if (!p) return real_pwrite64(fd, buf, n, off);
    pthread_mutex_lock(&mu);
    save_range('W', fd, p, (uint64_t)off, n);
    ssize_t r = real_pwrite64(fd, buf, n, off);
    pthread_mutex_unlock(&mu);
    return r;
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return pwrite64(fd, buf, n, (off64_t)off); }

ssize_t write(int fd, const void *buf, size_t n) {
    init();
    const char *p = path_of(fd);
    if (!p) return real_write(fd, buf, n);
    pthread_mutex_lock(&mu);
    off_t off = lseek(fd, 0, SEEK_CUR);
    if (off >= 0) save_range('W', fd, p, (uint64_t)off, n);
    ssize_t r = real_write(fd, buf, n);
    pthread_mutex_unlock(&mu);
    return r;
}

int ftruncate64(int fd, off64_t len) {
    init();
    const char *p = path_of(fd);
    if (!p) return real_ftruncate64(fd, len);
    pthread_mutex_lock(&mu);
    uint64_t old = size_of(fd);
    if ((uint64_t)len < old)
        save_range('T', fd, p, (uint64_t)len, old - (uint64_t)len);
    else
        record('T', p, (uint64_t)len, old, NULL, 0);
    int r = real_ftruncate64(fd, len);
    pthread_mutex_unlock(&mu);
    return r;
}
int ftruncate(int fd, off_t len) { return ftruncate64(fd, (off64_t)len); }

/* A sync covers the writes recorded before it started: its 'S' record carries the undo log's
 * length at that moment, so a write racing with the fsync is not taken as durable. */
static int synced(int fd, int (*sync)(int)) {
    init();
    const char *p = path_of(fd);
    if (!p) return sync(fd);
    pthread_mutex_lock(&mu);
    off_t mark = lseek(undo_fd, 0, SEEK_END);
    pthread_mutex_unlock(&mu);
    int r = sync(fd);
    if (r == 0 && mark >= 0) {
        pthread_mutex_lock(&mu);
        record('S', p, (uint64_t)mark, 0, NULL, 0);
        pthread_mutex_unlock(&mu);
    }
    return r;
}
int fsync(int fd) { return synced(fd, real_fsync); }
int fdatasync(int fd) { return synced(fd, real_fdatasync); }

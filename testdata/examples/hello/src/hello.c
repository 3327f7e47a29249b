/* The hello example's program: a static x86_64 Linux binary with no libc, so the image can be
 * FROM scratch and stay a few kilobytes. It prints what the Dockerfile set up: the GREETING
 * variable (ENV), the working directory (WORKDIR) and two copied files, one of them in a
 * nested directory (COPY files/ /).
 *
 * Rebuild (the binary in ../bin is committed so building the example needs no compiler):
 *   gcc -Os -static -nostdlib -ffreestanding -fno-stack-protector -fno-asynchronous-unwind-tables \
 *       -Wl,--build-id=none -s -o ../bin/hello hello.c
 */
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

enum { SYS_READ = 0, SYS_WRITE = 1, SYS_OPEN = 2, SYS_CLOSE = 3, SYS_EXIT = 60, SYS_GETCWD = 79 };

static unsigned long len(const char *s) {
    unsigned long n = 0;
    while (s[n]) n++;
    return n;
}

static void out(const char *s) { sys3(SYS_WRITE, 1, (long)s, (long)len(s)); }

static int has_prefix(const char *s, const char *p) {
    while (*p)
        if (*s++ != *p++) return 0;
    return 1;
}

/* Copies a file to stdout; returns 0, or 1 when it cannot be opened. */
static int cat(const char *path) {
    char buf[512];
    long fd = sys3(SYS_OPEN, (long)path, 0, 0), n;
    if (fd < 0) {
        out("missing: ");
        out(path);
        out("\n");
        return 1;
    }
    while ((n = sys3(SYS_READ, fd, (long)buf, sizeof buf)) > 0) sys3(SYS_WRITE, 1, (long)buf, n);
    sys3(SYS_CLOSE, fd, 0, 0);
    return 0;
}

void start_c(long *sp) {
    char **envp = (char **)(sp + sp[0] + 2); /* argc, argv[0..argc], NULL, then envp */
    const char *greeting = "(GREETING is not set)";
    char cwd[256];
    int failed = 0;
    for (char **e = envp; *e; e++)
        if (has_prefix(*e, "GREETING=")) greeting = *e + len("GREETING=");
    out(greeting);
    out("\nworkdir: ");
    if (sys3(SYS_GETCWD, (long)cwd, sizeof cwd, 0) > 0) out(cwd);
    out("\n");
    failed |= cat("message.txt");
    failed |= cat("/etc/hello/conf.d/extra.txt");
    sys3(SYS_EXIT, failed, 0, 0);
}

__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall start_c\n\thlt\n");

/* A probe for the escape suite: tries one thing the container must not be able to do and
 * prints "SAFE <what> errno=<NAME>" when the kernel refused, "RISK <what>" when it worked.
 * (For the calls a container is meant to make, such as clone with CLONE_NEWUSER for a nested
 * user namespace, "RISK" is simply the expected "it worked".)
 * Built with gcc -static at test-session start (busybox has no keyctl, bpf, ptrace...). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/netlink.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(const char *what, long rc) {
    if (rc < 0) {
        const char *name = strerrorname_np(errno);
        printf("SAFE %s errno=%s\n", what, name ? name : "?");
    } else {
        printf("RISK %s rc=%ld\n", what, rc);
    }
    return 0;
}

static long caps_raise(int cap) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) < 0) return -1;
    d[cap / 32].effective |= 1u << (cap % 32);
    d[cap / 32].permitted |= 1u << (cap % 32);
    return syscall(SYS_capset, &h, d);
}

static void ids(void) {
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    printf("euid=%d\n", (int)geteuid());
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp:", 8))
            fputs(line, stdout);
}

static void fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self = dirfd(d);
    printf("fds:");
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) != self) printf(" %s", e->d_name);
    printf("\n");
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    const char *arg = argc > 2 ? argv[2] : "";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(what, "keyctl"))  /* KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create */
        return report(what, syscall(SYS_keyctl, 0, -3, 1));
    if (!strcmp(what, "add_key"))
        return report(what, syscall(SYS_add_key, "user", "rl-probe", "x", 1, -2));
    if (!strcmp(what, "request_key"))
        return report(what, syscall(SYS_request_key, "user", "rl-probe", NULL, -2));
    if (!strcmp(what, "bpf")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return report(what, syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    }
    if (!strcmp(what, "perf_event_open")) {
        struct perf_event_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.size = sizeof attr;
        attr.type = PERF_TYPE_SOFTWARE;
        attr.config = PERF_COUNT_SW_TASK_CLOCK;
        attr.exclude_kernel = 1;
        return report(what, syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    }
    if (!strcmp(what, "userfaultfd"))
        return report(what, syscall(SYS_userfaultfd, O_CLOEXEC));
    if (!strcmp(what, "kexec_load"))
        return report(what, syscall(SYS_kexec_load, 0, 0, NULL, 0));
    if (!strcmp(what, "open_by_handle_at")) {  /* the "shocker" escape: a forged handle */
        char buf[sizeof(struct file_handle) + 8];
        struct file_handle *fh = (struct file_handle *)buf;
        memset(buf, 0, sizeof buf);
        fh->handle_bytes = 8;
        fh->handle_type = 1;  /* FILEID_INO32_GEN: inode 2, the root of most filesystems */
        ((unsigned int *)fh->f_handle)[0] = 2;
        return report(what, syscall(SYS_open_by_handle_at, AT_FDCWD, fh, O_RDONLY));
    }
    if (!strcmp(what, "ptrace"))
        return report(what, ptrace(PTRACE_ATTACH, atoi(arg), NULL, NULL));
    if (!strcmp(what, "mount_proc"))
        return report(what, mount("proc", arg, "proc", 0, NULL));
    if (!strcmp(what, "mount_sysfs"))
        return report(what, mount("sysfs", arg, "sysfs", 0, NULL));
    if (!strcmp(what, "umount"))
        return report(what, umount2(arg, MNT_DETACH));
    if (!strcmp(what, "remount_rw"))
        return report(what, mount(NULL, arg, NULL, MS_REMOUNT | MS_BIND, NULL));
    if (!strcmp(what, "mknod"))
        return report(what, mknod(arg, S_IFCHR | 0666, makedev(1, 3)));
    if (!strcmp(what, "sethostname"))
        return report(what, sethostname(arg, strlen(arg)));
    if (!strcmp(what, "unshare_user"))
        return report(what, unshare(CLONE_NEWUSER));
    if (!strcmp(what, "clone_newuser")) {
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        return report(what, pid);
    }
    if (!strcmp(what, "clone3_newuser")) {  /* clone3's flags live in memory, not in a register */
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_NEWUSER;
        args.exit_signal = SIGCHLD;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        return report(what, pid);
    }
    if (!strcmp(what, "socket_audit"))
        return report(what, socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT));
    if (!strcmp(what, "capset_raise"))
        return report(what, caps_raise(atoi(arg)));
    if (!strcmp(what, "ids")) { ids(); return 0; }
    if (!strcmp(what, "fds")) { fds(); return 0; }
    fprintf(stderr, "probe: unknown test %s\n", what);
    return 2;
}

/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Wire structs shared by the BPF programs and the Rust decoder.
 *
 * Every record in the ring buffer starts with `struct kestrel_hdr`. Records
 * with a variable tail (exec argv, file paths) are submitted with only the
 * used part of the tail; the tail follows the fixed struct directly.
 */
#ifndef __KESTREL_H
#define __KESTREL_H

#define KESTREL_COMM_LEN 16
#define KESTREL_ARGS_MAX 4096      /* argv bytes copied per exec */
#define KESTREL_FILENAME_MAX 512   /* exec filename */
#define KESTREL_EXE_MAX 64         /* basename of mm->exe_file */
#define KESTREL_PATH_MAX 4096      /* each path of a file event */
#define KESTREL_UNIX_PATH_MAX 108
#define KESTREL_CGROUP_PATH_MAX 512
#define KESTREL_MAX_ANCESTORS 8
#define KESTREL_FAILED_ARGV_MAX 64 /* argv elements read from a failed exec */
#define KESTREL_DIR_MAX 2048       /* bytes of a resolved directory (see put_dir) */
#define KESTREL_DIR_DEPTH 40       /* directory components walked */
#define KESTREL_NAME_READ 256      /* NAME_MAX + NUL: one component */

enum kestrel_kind {
	KIND_EXEC = 1,
	KIND_FORK = 2,
	KIND_EXIT = 3,
	KIND_FILE = 4,
	KIND_NET = 5,
	KIND_CGROUP = 6,
	KIND_EXEC_FAILED = 7,
};

/* hdr.flags */
enum kestrel_flag {
	FLAG_ARGS_TRUNCATED = 1 << 0,
	FLAG_ARGS_READ_FAILED = 1 << 1,
	FLAG_PATH_TRUNCATED = 1 << 2,
	FLAG_PATH_READ_FAILED = 1 << 3,
	FLAG_PATH2_TRUNCATED = 1 << 4,
	FLAG_PATH2_READ_FAILED = 1 << 5,
	FLAG_ADDR_READ_FAILED = 1 << 6,
	FLAG_NO_TASK_CONTEXT = 1 << 7, /* softirq: pid/comm are not the socket's owner */
	FLAG_FILENAME_TRUNCATED = 1 << 8,
	/* The directory a relative path names (dfd's, else the working
	 * directory) was resolved to the end: its dir tail is complete. */
	FLAG_DIR_RESOLVED = 1 << 9,
	FLAG_DIR2_RESOLVED = 1 << 10,
};

enum kestrel_file_op {
	FILE_OPEN = 1,
	FILE_RENAME = 2,
	FILE_UNLINK = 3,
};

enum kestrel_net_op {
	NET_CONNECT = 1,
	NET_ACCEPT = 2,
	NET_STATE = 3,
};

/* Per-CPU counters (index into the `stats` map). */
enum kestrel_stat {
	STAT_EMITTED = 0,        /* unused: the reader counts records */
	STAT_DROPPED = 1,        /* ring buffer full: record lost */
	STAT_FILTERED = 2,       /* rejected by the target-cgroup filter */
	STAT_ARGS_TRUNCATED = 3,
	STAT_READ_FAILED = 4,    /* a user string could not be read at syscall entry */
	STAT_MAX = 8,
};

struct kestrel_hdr {
	__u64 ts_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 cgroup_id;  /* cgroup v2 id (socket's cgroup for NET_STATE) */
	__u32 kind;       /* enum kestrel_kind */
	__u32 flags;      /* enum kestrel_flag */
	__u32 pid;        /* tgid */
	__u32 tid;
	__u32 ppid;       /* real_parent tgid */
	__u32 uid;
	__u32 pid_ns;     /* pid namespace inode */
	__u32 mnt_ns;     /* mount namespace inode */
	char comm[KESTREL_COMM_LEN];
};

/* A resolved directory tail ("dir") is the directory's components from the
 * leaf up, each NUL-terminated, as the task sees them up to its own root:
 * "x\0tmp\0" is /tmp/x and an empty tail with FLAG_DIR_RESOLVED is "/".
 * It is written only for a relative path, and only complete tails carry the
 * flag. */

/* followed by args_len bytes of NUL-separated argv, then dir_len bytes of
 * the working directory when the filename is relative */
struct exec_event {
	struct kestrel_hdr hdr;
	char pcomm[KESTREL_COMM_LEN];
	char filename[KESTREL_FILENAME_MAX];
	char exe[KESTREL_EXE_MAX];
	__u32 ns_pid;     /* pid as seen inside its own pid namespace */
	__u32 args_len;   /* bytes that follow */
	__u32 args_size;  /* mm->arg_end - mm->arg_start (before truncation) */
	__u32 dir_len;    /* bytes of the working-directory tail after argv */
};

/* An execve/execveat that returned an error (the caller keeps running its
 * own image). Followed by args_len bytes of NUL-separated argv, read from
 * the caller's memory at syscall exit. */
struct exec_failed_event {
	struct kestrel_hdr hdr;
	char filename[KESTREL_FILENAME_MAX];
	__s32 error;      /* the negative errno the syscall returned */
	__s32 dfd;        /* execveat's dirfd, AT_FDCWD (-100) for execve */
	__u32 at_flags;   /* execveat's flags, 0 for execve */
	__u32 args_len;   /* bytes that follow */
	__u32 argc;       /* argv elements read (at most KESTREL_FAILED_ARGV_MAX) */
	__u32 dir_len;    /* bytes of dfd's (or the cwd's) tail after argv */
};

struct fork_event {
	struct kestrel_hdr hdr; /* pid = child tgid, ppid = parent tgid */
	__u32 parent_pid;
	__u32 _pad;
};

struct exit_event {
	struct kestrel_hdr hdr;
	__u32 exit_code;  /* task->exit_code: (status << 8) | signal */
	__u32 _pad;
};

/* followed by path_len bytes of path, path2_len bytes of path2, then the
 * directory tails of a relative path (dir_len) and path2 (dir2_len) */
struct file_event {
	struct kestrel_hdr hdr;
	__u32 op;         /* enum kestrel_file_op */
	__u32 syscall_nr;
	__s32 dfd;
	__s32 dfd2;
	__u32 flags;      /* open flags, rename flags, unlink flags */
	__u32 mode;
	__u32 path_len;
	__u32 path2_len;
	__u32 dir_len;
	__u32 dir2_len;
};

struct net_event {
	struct kestrel_hdr hdr;
	__u64 sock;       /* kernel socket address: correlates connect/accept/state */
	__u32 op;         /* enum kestrel_net_op */
	__s32 fd;
	__u16 family;
	__u16 protocol;   /* IPPROTO_*, 0 if unknown */
	__u16 sock_type;  /* SOCK_STREAM, SOCK_DGRAM, 0 if unknown */
	__u16 sport;      /* host byte order */
	__u16 dport;      /* host byte order */
	__u16 oldstate;
	__u16 newstate;
	__u16 unix_path_len;
	__u8 saddr[16];
	__u8 daddr[16];
	char unix_path[KESTREL_UNIX_PATH_MAX];
	__s32 _pad;
};

/* followed by path_len bytes of cgroup path */
struct cgroup_event {
	struct kestrel_hdr hdr;
	__u64 id;
	__s32 level;
	__u32 mkdir;      /* 1 = created, 0 = removed */
	__u32 path_len;
	__u32 _pad;
};

#endif /* __KESTREL_H */

// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Process lifecycle: exec (with full argv), fork, exit, and cgroup
 * creation/removal (so user space can follow containers as they come and go).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "common.bpf.h"

/* argv, then the working directory's tail at an offset below
 * 2 * KESTREL_ARGS_MAX (see add_dir) */
#define EXEC_TAIL_SIZE (2 * KESTREL_ARGS_MAX + KESTREL_DIR_MAX + KESTREL_NAME_READ)
struct exec_buf {
	struct exec_event ev;
	char args[EXEC_TAIL_SIZE];
};

struct cgroup_buf {
	struct cgroup_event ev;
	char path[KESTREL_CGROUP_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_buf);
} exec_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cgroup_buf);
} cgroup_scratch SEC(".maps");

/* The pointers an exec attempt passed, kept from syscall entry to exit. */
struct exec_attempt {
	__u64 filename;
	__u64 argv;
	__s32 dfd;
	__u32 at_flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);                 /* tid */
	__type(value, struct exec_attempt);
} exec_attempts SEC(".maps");

/* Twice the kept argv: each element is read at an offset below
 * KESTREL_ARGS_MAX with up to KESTREL_ARGS_MAX bytes, which the verifier can
 * bound; what lies past KESTREL_ARGS_MAX is never submitted. */
struct exec_failed_buf {
	struct exec_failed_event ev;
	char args[EXEC_TAIL_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_failed_buf);
} exec_failed_scratch SEC(".maps");

/* Instances so the skeleton generator emits Rust types for the wire structs. */
struct exec_event _exec_event = {};
struct exec_failed_event _exec_failed_event = {};
struct fork_event _fork_event = {};
struct exit_event _exit_event = {};
struct cgroup_event _cgroup_event = {};

static __always_inline __u32 ns_pid_of(struct task_struct *task)
{
	struct pid *p = task->thread_pid;
	if (!p)
		return 0;
	unsigned int level = p->level;
	struct upid up = {};
	bpf_probe_read_kernel(&up, sizeof(up), &p->numbers[level & 7]);
	return up.nr;
}

/* Appends the tail of dfd's directory (the working directory for AT_FDCWD)
 * at tail[off], off being at most KESTREL_ARGS_MAX; *len (in the map value,
 * see put_dir) is its length, 0 when it could not be resolved to the root. */
static __always_inline void add_dir(char *tail, __u64 off, struct task_struct *task, int dfd,
				    __u32 *flags, volatile __u32 *len)
{
	struct dentry *d = NULL;
	struct vfsmount *vm = NULL;
	*len = 0;
	if (!dir_of(task, dfd, &d, &vm))
		return;
	asm volatile("" : "+r"(off));
	off &= 2 * KESTREL_ARGS_MAX - 1;
	if (put_dir(tail + off, len, task, d, vm))
		*flags |= FLAG_DIR_RESOLVED;
	else
		*len = 0;
}

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u64 cgid;
	if (!current_wanted(&cgid))
		return 0;
	__u32 zero = 0;
	struct exec_buf *b = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!b)
		return 0;
	struct exec_event *e = &b->ev;
	struct task_struct *task = bpf_get_current_task_btf();

	fill_hdr(&e->hdr, KIND_EXEC, task, cgid);
	__builtin_memcpy(e->pcomm, task->real_parent->comm, sizeof(e->pcomm));
	e->ns_pid = ns_pid_of(task);

	unsigned int off = ctx->__data_loc_filename & 0xFFFF;
	long n = bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename),
					   (void *)ctx + off);
	if (n == sizeof(e->filename))
		e->hdr.flags |= FLAG_FILENAME_TRUNCATED;

	struct mm_struct *mm = task->mm;
	if (!mm)
		return 0;
	struct file *exe_file = mm->exe_file;
	const unsigned char *exe_name = exe_file ? exe_file->f_path.dentry->d_name.name : NULL;
	if (!exe_name || bpf_probe_read_kernel_str(&e->exe, sizeof(e->exe), exe_name) < 0)
		e->exe[0] = 0;

	unsigned long start = mm->arg_start;
	unsigned long end = mm->arg_end;
	__u64 size = end > start ? end - start : 0;
	__u32 len = size > KESTREL_ARGS_MAX ? KESTREL_ARGS_MAX : size;
	e->args_size = size;
	if (size > KESTREL_ARGS_MAX) {
		e->hdr.flags |= FLAG_ARGS_TRUNCATED;
		stat_inc(STAT_ARGS_TRUNCATED);
	}
	if (len > 0 && bpf_probe_read_user(b->args, len, (void *)start) < 0) {
		e->hdr.flags |= FLAG_ARGS_READ_FAILED;
		stat_inc(STAT_READ_FAILED);
		len = 0;
	}
	e->args_len = len;
	e->dir_len = 0;
	/* `./miner` run from /tmp is /tmp/miner */
	if (e->filename[0] != '/' && e->filename[0] != 0)
		add_dir(b->args, len, task, AT_FDCWD, &e->hdr.flags, &e->dir_len);
	__u64 total = sizeof(struct exec_event) + len + *(volatile __u32 *)&e->dir_len;
	if (total > sizeof(*b))
		total = sizeof(*b);
	submit(b, total);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	/* threads share the tgid: only new processes are interesting */
	if (child->pid != child->tgid)
		return 0;
	__u64 cgid;
	if (!current_wanted(&cgid))
		return 0;
	struct fork_event e = {};
	fill_hdr(&e.hdr, KIND_FORK, child, cgid);
	e.hdr.pid = child->tgid;
	e.hdr.tid = e.hdr.pid;
	e.hdr.ppid = parent->tgid;
	e.parent_pid = e.hdr.ppid;
	submit(&e, sizeof(e));
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	/* report the process once, when its leader thread goes */
	if (task->pid != task->tgid)
		return 0;
	__u64 cgid;
	if (!current_wanted(&cgid))
		return 0;
	struct exit_event e = {};
	fill_hdr(&e.hdr, KIND_EXIT, task, cgid);
	e.exit_code = task->exit_code;
	submit(&e, sizeof(e));
	return 0;
}

static __always_inline int cgroup_change(struct trace_event_raw_cgroup *ctx, __u32 mkdir)
{
	/* only the unified (v2) hierarchy: its ids are what events carry */
	if (ctx->root != 0)
		return 0;
	__u32 zero = 0;
	struct cgroup_buf *b = bpf_map_lookup_elem(&cgroup_scratch, &zero);
	if (!b)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	fill_hdr(&b->ev.hdr, KIND_CGROUP, task, bpf_get_current_cgroup_id());
	b->ev.id = ctx->id;
	b->ev.level = ctx->level;
	b->ev.mkdir = mkdir;
	unsigned int off = ctx->__data_loc_path & 0xFFFF;
	long n = bpf_probe_read_kernel_str(b->path, sizeof(b->path), (void *)ctx + off);
	if (n < 0) {
		n = 0;
		b->ev.hdr.flags |= FLAG_PATH_READ_FAILED;
	} else if (n == sizeof(b->path)) {
		b->ev.hdr.flags |= FLAG_PATH_TRUNCATED;
	}
	__u32 len = n > 0 ? n - 1 : 0; /* without the NUL */
	b->ev.path_len = len;
	__u64 total = sizeof(struct cgroup_event) + len;
	if (total > sizeof(*b))
		total = sizeof(*b);
	submit(b, total);
	return 0;
}

SEC("tracepoint/cgroup/cgroup_mkdir")
int handle_cgroup_mkdir(struct trace_event_raw_cgroup *ctx)
{
	return cgroup_change(ctx, 1);
}

SEC("tracepoint/cgroup/cgroup_rmdir")
int handle_cgroup_rmdir(struct trace_event_raw_cgroup *ctx)
{
	return cgroup_change(ctx, 0);
}

/* Failed exec attempts: sched_process_exec reports only execs that
 * succeeded. Entry remembers the user pointers; exit, when the call failed,
 * reads the filename and argv from the caller's memory (still mapped: a
 * failed exec keeps the caller's image) and reports them with the error. */
static __always_inline void remember_attempt(__u64 filename, __u64 argv, __s32 dfd,
					     __u32 at_flags)
{
	__u64 cgid;
	if (!current_wanted(&cgid))
		return;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_attempt a = {
		.filename = filename,
		.argv = argv,
		.dfd = dfd,
		.at_flags = at_flags,
	};
	bpf_map_update_elem(&exec_attempts, &tid, &a, BPF_ANY);
}

static __always_inline void report_failure(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_attempt *a = bpf_map_lookup_elem(&exec_attempts, &tid);
	if (!a)
		return;
	struct exec_attempt at = *a;
	bpf_map_delete_elem(&exec_attempts, &tid);
	if (ret >= 0)
		return;
	__u64 cgid;
	if (!current_wanted(&cgid))
		return;
	__u32 zero = 0;
	struct exec_failed_buf *b = bpf_map_lookup_elem(&exec_failed_scratch, &zero);
	if (!b)
		return;
	struct exec_failed_event *e = &b->ev;
	struct task_struct *task = bpf_get_current_task_btf();
	fill_hdr(&e->hdr, KIND_EXEC_FAILED, task, cgid);
	e->error = (__s32)ret;
	e->dfd = at.dfd;
	e->at_flags = at.at_flags;
	long n = bpf_probe_read_user_str(&e->filename, sizeof(e->filename),
					 (const char *)at.filename);
	if (n < 0) {
		e->filename[0] = 0;
		e->hdr.flags |= FLAG_PATH_READ_FAILED;
	} else if (n == sizeof(e->filename)) {
		e->hdr.flags |= FLAG_FILENAME_TRUNCATED;
	}
	__u32 off = 0;
	__u32 argc = 0;
	for (int i = 0; i < KESTREL_FAILED_ARGV_MAX; i++) {
		const char *arg = NULL;
		if (!at.argv ||
		    bpf_probe_read_user(&arg, sizeof(arg), (const void *)(at.argv + i * sizeof(arg))) < 0) {
			if (at.argv)
				e->hdr.flags |= FLAG_ARGS_READ_FAILED;
			break;
		}
		if (!arg)
			break;
		if (off >= KESTREL_ARGS_MAX) {
			e->hdr.flags |= FLAG_ARGS_TRUNCATED;
			break;
		}
		long m = bpf_probe_read_user_str(&b->args[off & (KESTREL_ARGS_MAX - 1)],
						 KESTREL_ARGS_MAX, arg);
		if (m < 0) {
			e->hdr.flags |= FLAG_ARGS_READ_FAILED;
			break;
		}
		off += m;
		argc++;
	}
	if (argc == KESTREL_FAILED_ARGV_MAX)
		e->hdr.flags |= FLAG_ARGS_TRUNCATED;
	if (off > KESTREL_ARGS_MAX) {
		off = KESTREL_ARGS_MAX;
		e->hdr.flags |= FLAG_ARGS_TRUNCATED;
	}
	e->args_len = off;
	e->argc = argc;
	e->dir_len = 0;
	if (e->filename[0] != '/' && e->filename[0] != 0)
		add_dir(b->args, off, task, at.dfd, &e->hdr.flags, &e->dir_len);
	/* off is at most KESTREL_ARGS_MAX already; the opaque copy keeps the
	 * compiler from dropping the mask that proves it to the verifier */
	__u64 len = off;
	asm volatile("" : "+r"(len));
	len &= 2 * KESTREL_ARGS_MAX - 1;
	__u64 total = sizeof(struct exec_failed_event) + len + *(volatile __u32 *)&e->dir_len;
	if (total > sizeof(*b))
		total = sizeof(*b);
	submit(b, total);
}

SEC("tracepoint/syscalls/sys_enter_execve")
int handle_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	remember_attempt(ctx->args[0], ctx->args[1], -100, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int handle_enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	remember_attempt(ctx->args[1], ctx->args[2], (__s32)ctx->args[0], (__u32)ctx->args[4]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int handle_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	report_failure(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int handle_exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	report_failure(ctx->ret);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

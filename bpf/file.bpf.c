// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* File activity at syscall entry: open/openat/openat2, rename/renameat/
 * renameat2, unlink/unlinkat. Paths are recorded as the caller passed them;
 * for a relative one the directory it is relative to (dfd's, or the working
 * directory) is walked here and sent as a dir tail, so user space can name
 * the file even after the process has gone.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "common.bpf.h"

/* Both paths (each read below KESTREL_PATH_MAX with up to KESTREL_PATH_MAX
 * bytes), then the directory tails at an offset the verifier bounds by
 * DIRS_AT_MASK, each up to KESTREL_DIR_MAX + KESTREL_NAME_READ bytes. */
#define DIRS_AT_MASK (4 * KESTREL_PATH_MAX - 1)
struct file_buf {
	struct file_event ev;
	char paths[4 * KESTREL_PATH_MAX + KESTREL_DIR_MAX + KESTREL_NAME_READ];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct file_buf);
} file_scratch SEC(".maps");

struct file_event _file_event = {};

/* struct open_how as openat2 receives it */
struct kestrel_open_how {
	__u64 flags;
	__u64 mode;
	__u64 resolve;
};

static __always_inline struct file_buf *begin(__u32 op, long nr)
{
	__u64 cgid;
	if (!current_wanted(&cgid))
		return NULL;
	__u32 zero = 0;
	struct file_buf *b = bpf_map_lookup_elem(&file_scratch, &zero);
	if (!b)
		return NULL;
	struct task_struct *task = bpf_get_current_task_btf();
	fill_hdr(&b->ev.hdr, KIND_FILE, task, cgid);
	b->ev.op = op;
	b->ev.syscall_nr = nr;
	b->ev.dfd = AT_FDCWD;
	b->ev.dfd2 = AT_FDCWD;
	b->ev.flags = 0;
	b->ev.mode = 0;
	b->ev.path_len = 0;
	b->ev.path2_len = 0;
	b->ev.dir_len = 0;
	b->ev.dir2_len = 0;
	return b;
}

/* Read a user string into paths[off..]; returns bytes kept (no NUL). */
static __always_inline __u32 read_path(struct file_buf *b, __u32 off, const char *src,
				       __u32 trunc_flag, __u32 fail_flag)
{
	long n = bpf_probe_read_user_str(&b->paths[off & (KESTREL_PATH_MAX - 1)],
					 KESTREL_PATH_MAX, src);
	if (n <= 0) {
		b->ev.hdr.flags |= fail_flag;
		stat_inc(STAT_READ_FAILED);
		return 0;
	}
	if (n == KESTREL_PATH_MAX)
		b->ev.hdr.flags |= trunc_flag;
	return n - 1;
}

/* Appends the dir tail of `dfd` after what the record holds so far (the
 * lengths are read back from the map value, so the verifier sees an
 * unknown, masked offset rather than one state per length); *len is zero
 * again when the walk did not reach the root. */
static __always_inline void add_dir(struct file_buf *b, int dfd, __u32 flag, volatile __u32 *len)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct dentry *d = NULL;
	struct vfsmount *vm = NULL;
	if (!dir_of(task, dfd, &d, &vm))
		return;
	volatile struct file_event *ev = &b->ev;
	__u32 off = ev->path_len + ev->path2_len + ev->dir_len;
	*len = 0;
	if (put_dir(&b->paths[off & DIRS_AT_MASK], len, task, d, vm))
		b->ev.hdr.flags |= flag;
	else
		*len = 0;
}

static __always_inline void finish(struct file_buf *b, const char *p1, const char *p2)
{
	__u32 l1 = read_path(b, 0, p1, FLAG_PATH_TRUNCATED, FLAG_PATH_READ_FAILED);
	b->ev.path_len = l1;
	__u32 l2 = 0;
	if (p2) {
		l2 = read_path(b, l1, p2, FLAG_PATH2_TRUNCATED, FLAG_PATH2_READ_FAILED);
		b->ev.path2_len = l2;
	}
	if (l1 > 0 && b->paths[0] != '/')
		add_dir(b, b->ev.dfd, FLAG_DIR_RESOLVED, &b->ev.dir_len);
	if (l2 > 0 && b->paths[l1 & (KESTREL_PATH_MAX - 1)] != '/')
		add_dir(b, b->ev.dfd2, FLAG_DIR2_RESOLVED, &b->ev.dir2_len);
	volatile struct file_event *ev = &b->ev;
	__u64 total = sizeof(struct file_event) + (__u64)ev->path_len + ev->path2_len +
		      ev->dir_len + ev->dir2_len;
	if (total > sizeof(*b))
		total = sizeof(*b);
	submit(b, total);
}

SEC("tracepoint/syscalls/sys_enter_open")
int handle_open(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_OPEN, ctx->id);
	if (!b)
		return 0;
	b->ev.flags = ctx->args[1];
	b->ev.mode = ctx->args[2];
	finish(b, (const char *)ctx->args[0], NULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int handle_openat(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_OPEN, ctx->id);
	if (!b)
		return 0;
	b->ev.dfd = ctx->args[0];
	b->ev.flags = ctx->args[2];
	b->ev.mode = ctx->args[3];
	finish(b, (const char *)ctx->args[1], NULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int handle_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_OPEN, ctx->id);
	if (!b)
		return 0;
	b->ev.dfd = ctx->args[0];
	struct kestrel_open_how how = {};
	if (bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]) == 0) {
		b->ev.flags = how.flags;
		b->ev.mode = how.mode;
	}
	finish(b, (const char *)ctx->args[1], NULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_rename")
int handle_rename(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_RENAME, ctx->id);
	if (!b)
		return 0;
	finish(b, (const char *)ctx->args[0], (const char *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_renameat")
int handle_renameat(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_RENAME, ctx->id);
	if (!b)
		return 0;
	b->ev.dfd = ctx->args[0];
	b->ev.dfd2 = ctx->args[2];
	finish(b, (const char *)ctx->args[1], (const char *)ctx->args[3]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_renameat2")
int handle_renameat2(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_RENAME, ctx->id);
	if (!b)
		return 0;
	b->ev.dfd = ctx->args[0];
	b->ev.dfd2 = ctx->args[2];
	b->ev.flags = ctx->args[4];
	finish(b, (const char *)ctx->args[1], (const char *)ctx->args[3]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_unlink")
int handle_unlink(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_UNLINK, ctx->id);
	if (!b)
		return 0;
	finish(b, (const char *)ctx->args[0], NULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int handle_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	struct file_buf *b = begin(FILE_UNLINK, ctx->id);
	if (!b)
		return 0;
	b->ev.dfd = ctx->args[0];
	b->ev.flags = ctx->args[2];
	finish(b, (const char *)ctx->args[1], NULL);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

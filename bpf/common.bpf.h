/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Maps, knobs and helpers shared by every Kestrel BPF program.
 *
 * Each object declares the same `events`, `target_cgroups` and `stats` maps;
 * user space creates them with the first object and hands the same fds to the
 * others (`reuse_fd`), so all classes share one ring buffer and one filter.
 */
#ifndef __KESTREL_COMMON_BPF_H
#define __KESTREL_COMMON_BPF_H

#include "kestrel.h"

#define FILTER_OFF 0     /* everything, host included */
#define FILTER_TARGETS 1 /* only cgroups in target_cgroups (or below one) */

const volatile __u32 filter_mode = FILTER_TARGETS;
const volatile __u32 self_tgid = 0;
/* Force a wake-up once this many bytes wait in the ring; otherwise none. */
const volatile __u64 wakeup_bytes = 256 * 1024;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} target_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Per-CPU count of records submitted by this object (wake-up sampling). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} submit_count SEC(".maps");

#define WAKEUP_CHECK_EVERY 16

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* Is the current task in a watched cgroup (its own or an ancestor's id)?
 * Stores the task's cgroup id in *cgid so fill_hdr need not ask again. */
static __always_inline bool current_wanted(__u64 *cgid)
{
	__u64 id = bpf_get_current_cgroup_id();
	*cgid = id;
	if (filter_mode == FILTER_OFF)
		return (bpf_get_current_pid_tgid() >> 32) != self_tgid;
	if (bpf_map_lookup_elem(&target_cgroups, &id))
		return true;
#pragma unroll
	for (int lvl = 1; lvl < KESTREL_MAX_ANCESTORS; lvl++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(lvl);
		if (anc == 0 || anc == id)
			break;
		if (bpf_map_lookup_elem(&target_cgroups, &anc))
			return true;
	}
	stat_inc(STAT_FILTERED);
	return false;
}

/* Same test for an arbitrary cgroup (a socket's, in softirq context). */
static __always_inline bool cgroup_wanted(struct cgroup *cgrp)
{
	if (filter_mode == FILTER_OFF)
		return true;
	if (!cgrp)
		goto out;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	if (bpf_map_lookup_elem(&target_cgroups, &id))
		return true;
	int level = BPF_CORE_READ(cgrp, level);
#pragma unroll
	for (int lvl = 1; lvl < KESTREL_MAX_ANCESTORS; lvl++) {
		if (lvl >= level)
			break;
		struct cgroup *a = NULL;
		bpf_core_read(&a, sizeof(a), &cgrp->ancestors[lvl]);
		if (!a)
			break;
		__u64 aid = BPF_CORE_READ(a, kn, id);
		if (bpf_map_lookup_elem(&target_cgroups, &aid))
			return true;
	}
out:
	stat_inc(STAT_FILTERED);
	return false;
}

/* `task` is a BTF pointer (bpf_get_current_task_btf or a raw tracepoint
 * argument): fields are read with direct, fault-checked loads instead of one
 * probe-read helper call per pointer hop. `cgid` is the current task's cgroup
 * id, as current_wanted found it. */
static __always_inline void fill_hdr(struct kestrel_hdr *h, __u32 kind,
				     struct task_struct *task, __u64 cgid)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	h->ts_ns = bpf_ktime_get_ns();
	h->cgroup_id = cgid;
	h->kind = kind;
	h->flags = 0;
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->ppid = task->real_parent->tgid;
	h->uid = (__u32)bpf_get_current_uid_gid();
	struct nsproxy *ns = task->nsproxy;
	h->pid_ns = ns ? ns->pid_ns_for_children->ns.inum : 0;
	h->mnt_ns = ns ? ns->mnt_ns->ns.inum : 0;
	/* two direct 8-byte loads instead of the bpf_get_current_comm helper */
	__builtin_memcpy(h->comm, task->comm, sizeof(h->comm));
}

/* Submit `size` bytes of `data`; wake the reader only when enough is queued.
 *
 * Every wake-up is an irq_work self-IPI, which is expensive on this kind of
 * VM, so a wake-up is sent only while the fill level is in
 * [wakeup_bytes, 2 * wakeup_bytes): once the reader has been woken, records
 * that pile up behind it while it is being scheduled do not wake it again.
 * The fill level is looked at on every WAKEUP_CHECK_EVERY-th record of a CPU
 * (user space caps wakeup_bytes at a quarter of the ring, so a sample always
 * falls inside the window), and the reader also drains on its own timer. */
static __always_inline void submit(void *data, __u64 size)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u32 zero = 0;
	__u32 *n = bpf_map_lookup_elem(&submit_count, &zero);
	if (n && ((*n)++ & (WAKEUP_CHECK_EVERY - 1)) == 0) {
		__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		if (avail >= wakeup_bytes && avail < 2 * wakeup_bytes)
			flags = BPF_RB_FORCE_WAKEUP;
	}
	/* records that made it are counted by the reader; only losses here */
	if (bpf_ringbuf_output(&events, data, size, flags) != 0)
		stat_inc(STAT_DROPPED);
}


#ifndef AT_FDCWD
#define AT_FDCWD -100
#endif

/* The directory a relative path is relative to: `dfd`'s open file, or the
 * task's working directory for AT_FDCWD. False when dfd names no file. */
static __always_inline bool dir_of(struct task_struct *task, int dfd,
				   struct dentry **d, struct vfsmount **vm)
{
	if (dfd == AT_FDCWD) {
		struct fs_struct *fs = BPF_CORE_READ(task, fs);
		*d = BPF_CORE_READ(fs, pwd.dentry);
		*vm = BPF_CORE_READ(fs, pwd.mnt);
		return *d && *vm;
	}
	if (dfd < 0)
		return false;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)dfd >= max)
		return false;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[dfd & 0xFFFFF]) || !f)
		return false;
	*d = BPF_CORE_READ(f, f_path.dentry);
	*vm = BPF_CORE_READ(f, f_path.mnt);
	return *d && *vm;
}

/* Writes the directory (d, vm) as a dir tail (kestrel.h) into buf, which
 * must hold KESTREL_DIR_MAX + KESTREL_NAME_READ bytes, walking up through
 * mounts to the task's root (a container's root, after pivot_root). *used
 * (zero on entry) counts the bytes written. True only when the walk reached
 * the root within KESTREL_DIR_DEPTH components and KESTREL_DIR_MAX bytes.
 * A bounded dentry walk instead of bpf_d_path, which tracepoints cannot
 * call.
 *
 * *used must live in a map value: the verifier does not track what memory
 * holds, so reloading it each step leaves the loop one state per depth
 * instead of one per possible length (which exceeds the 1M-instruction
 * budget once two walks share a program, as a rename's do). */
static __always_inline bool put_dir(char *buf, volatile __u32 *used, struct task_struct *task,
				    struct dentry *d, struct vfsmount *vm)
{
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct dentry *root_d = BPF_CORE_READ(fs, root.dentry);
	struct vfsmount *root_m = BPF_CORE_READ(fs, root.mnt);
	__u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	struct mount *m = (struct mount *)((void *)vm - mnt_off);
	for (int i = 0; i < KESTREL_DIR_DEPTH; i++) {
		if (d == root_d && vm == root_m)
			return true;
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		if (d == BPF_CORE_READ(vm, mnt_root) || d == parent) {
			/* the top of this mount: go on from where it is mounted */
			struct mount *up = BPF_CORE_READ(m, mnt_parent);
			/* the namespace's root without meeting the task's root: a
			 * directory outside it (after a chroot) is named from the
			 * namespace's root */
			if (!up || up == m)
				return true;
			d = BPF_CORE_READ(m, mnt_mountpoint);
			m = up;
			vm = (struct vfsmount *)((void *)up + mnt_off);
			continue;
		}
		__u32 u = *used;
		if (u > KESTREL_DIR_MAX - KESTREL_NAME_READ)
			return false;
		const unsigned char *name = BPF_CORE_READ(d, d_name.name);
		long n = bpf_probe_read_kernel_str(buf + (u & (KESTREL_DIR_MAX - 1)),
						   KESTREL_NAME_READ, name);
		if (n <= 1)
			return false;
		*used = u + n;
		d = parent;
	}
	return false;
}

/* Is the user string at `p` a relative path (its first byte not '/')? */
static __always_inline bool user_path_relative(const char *p)
{
	char c = 0;
	return p && bpf_probe_read_user(&c, 1, p) == 0 && c != '/';
}

#endif /* __KESTREL_COMMON_BPF_H */

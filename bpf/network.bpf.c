// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Network activity: connect (IPv4, IPv6, unix) at entry, accepted
 * connections at accept exit, and TCP state changes that matter (listen,
 * established in either direction, failed connects). State changes run in
 * softirq context, so they are filtered and attributed by the socket's own
 * cgroup, never by `current`.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

struct net_event _net_event = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct net_event);
} net_scratch SEC(".maps");

static __always_inline struct net_event *scratch(void)
{
	__u32 zero = 0;
	struct net_event *e = bpf_map_lookup_elem(&net_scratch, &zero);
	if (e)
		__builtin_memset(e, 0, sizeof(*e));
	return e;
}

/* The socket behind `fd` of `task`, or NULL when fd is not a socket. */
static __always_inline struct sock *sock_of_fd(struct task_struct *task, int fd)
{
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_core_read(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(so, sk);
}

/* Local and peer addresses of an (IPv4/IPv6) socket. */
static __always_inline void fill_from_sock(struct net_event *e, struct sock *sk)
{
	e->sock = (__u64)sk;
	e->protocol = BPF_CORE_READ(sk, sk_protocol);
	e->sock_type = BPF_CORE_READ(sk, sk_type);
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET) {
		__u32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(e->saddr, &s, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	} else if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

SEC("tracepoint/syscalls/sys_enter_connect")
int handle_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 cgid;
	if (!current_wanted(&cgid))
		return 0;
	struct net_event *e = scratch();
	if (!e)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	fill_hdr(&e->hdr, KIND_NET, task, cgid);
	e->op = NET_CONNECT;
	e->fd = ctx->args[0];
	const void *uaddr = (const void *)ctx->args[1];
	__u32 addrlen = ctx->args[2];

	struct sock *sk = sock_of_fd(task, e->fd);
	if (sk) {
		e->sock = (__u64)sk;
		e->protocol = BPF_CORE_READ(sk, sk_protocol);
		e->sock_type = BPF_CORE_READ(sk, sk_type);
		e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	}

	__u16 family = 0;
	if (bpf_probe_read_user(&family, sizeof(family), uaddr) < 0) {
		e->hdr.flags |= FLAG_ADDR_READ_FAILED;
		stat_inc(STAT_READ_FAILED);
		goto out;
	}
	e->family = family;
	if (family == AF_INET) {
		struct sockaddr_in sa = {};
		if (bpf_probe_read_user(&sa, sizeof(sa), uaddr) == 0) {
			e->dport = bpf_ntohs(sa.sin_port);
			__builtin_memcpy(e->daddr, &sa.sin_addr.s_addr, 4);
		} else {
			e->hdr.flags |= FLAG_ADDR_READ_FAILED;
		}
	} else if (family == AF_INET6) {
		struct sockaddr_in6 sa = {};
		if (bpf_probe_read_user(&sa, sizeof(sa), uaddr) == 0) {
			e->dport = bpf_ntohs(sa.sin6_port);
			__builtin_memcpy(e->daddr, &sa.sin6_addr, 16);
		} else {
			e->hdr.flags |= FLAG_ADDR_READ_FAILED;
		}
	} else if (family == AF_UNIX) {
		/* sun_path is not NUL-terminated for abstract sockets: copy bytes */
		__u32 n = addrlen > 2 ? addrlen - 2 : 0;
		if (n > KESTREL_UNIX_PATH_MAX)
			n = KESTREL_UNIX_PATH_MAX;
		if (n > 0 && bpf_probe_read_user(e->unix_path, n, uaddr + 2) == 0)
			e->unix_path_len = n;
	}
out:
	submit(e, sizeof(*e));
	return 0;
}

static __always_inline int accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	long fd = ctx->ret;
	if (fd < 0)
		return 0;
	__u64 cgid;
	if (!current_wanted(&cgid))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct sock *sk = sock_of_fd(task, fd);
	if (!sk)
		return 0;
	struct net_event *e = scratch();
	if (!e)
		return 0;
	fill_hdr(&e->hdr, KIND_NET, task, cgid);
	e->op = NET_ACCEPT;
	e->fd = fd;
	fill_from_sock(e, sk);
	submit(e, sizeof(*e));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx);
}

SEC("tracepoint/sock/inet_sock_set_state")
int handle_sock_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	int oldstate = ctx->oldstate;
	int newstate = ctx->newstate;
	bool interesting = newstate == TCP_LISTEN ||
			   (newstate == TCP_ESTABLISHED &&
			    (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV)) ||
			   (newstate == TCP_CLOSE && oldstate == TCP_SYN_SENT);
	if (!interesting)
		return 0;
	struct sock *sk = (struct sock *)ctx->skaddr;
	struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	if (!cgroup_wanted(cg))
		return 0;
	struct net_event *e = scratch();
	if (!e)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	fill_hdr(&e->hdr, KIND_NET, task, bpf_get_current_cgroup_id());
	__u64 sk_cgid = cg ? BPF_CORE_READ(cg, kn, id) : 0;
	if (e->hdr.cgroup_id != sk_cgid) {
		/* softirq or another task: current is not the socket's owner */
		e->hdr.flags |= FLAG_NO_TASK_CONTEXT;
		e->hdr.pid = 0;
		e->hdr.tid = 0;
		e->hdr.ppid = 0;
		e->hdr.uid = 0;
		e->hdr.comm[0] = 0;
	}
	e->hdr.cgroup_id = sk_cgid;
	e->op = NET_STATE;
	e->fd = -1;
	e->sock = (__u64)sk;
	e->family = ctx->family;
	e->protocol = ctx->protocol;
	e->sock_type = 1; /* SOCK_STREAM: this tracepoint is TCP-only */
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	e->oldstate = oldstate;
	e->newstate = newstate;
	if (ctx->family == AF_INET) {
		bpf_probe_read_kernel(e->saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(e->daddr, 4, ctx->daddr);
	} else {
		bpf_probe_read_kernel(e->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
	}
	submit(e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

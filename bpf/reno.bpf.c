/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * A minimal Reno, registered as "tcpls_reno": slow start, one segment
 * more per window, half the window on loss. The smallest complete
 * controller; start from it to write your own (see bpf/README.md).
 */
#include "tcpls_ca.h"

/* struct_ops programs call GPL-only kernel code. */
char _license[] SEC("license") = "GPL";

SEC("struct_ops")
u32 BPF_PROG(reno_ssthresh, struct sock *sk)
{
	return tcpls_reno_ssthresh(sk);
}

SEC("struct_ops")
void BPF_PROG(reno_cong_avoid, struct sock *sk, u32 ack, u32 acked)
{
	tcpls_reno_cong_avoid(sk, acked);
}

SEC("struct_ops")
u32 BPF_PROG(reno_undo_cwnd, struct sock *sk)
{
	return tcpls_reno_undo_cwnd(sk);
}

/* .struct_ops.link: registered through a BPF link, so the controller is
 * unregistered when its loader closes the link (or exits). */
SEC(".struct_ops.link")
struct tcp_congestion_ops tcpls_reno = {
	.ssthresh = (void *)reno_ssthresh,
	.cong_avoid = (void *)reno_cong_avoid,
	.undo_cwnd = (void *)reno_undo_cwnd,
	.name = "tcpls_reno",
};

/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * A controller the kernel's verifier must refuse (for tests): it writes
 * snd_una, a field struct_ops controllers may only read. It compiles; only
 * loading it fails.
 */
#include "../include/tcpls_ca.h"

char _license[] SEC("license") = "GPL";

SEC("struct_ops")
u32 BPF_PROG(bad_ssthresh, struct sock *sk)
{
	return tcpls_reno_ssthresh(sk);
}

SEC("struct_ops")
void BPF_PROG(bad_cong_avoid, struct sock *sk, u32 ack, u32 acked)
{
	tcp_sk(sk)->snd_una = ack;
}

SEC("struct_ops")
u32 BPF_PROG(bad_undo_cwnd, struct sock *sk)
{
	return tcpls_reno_undo_cwnd(sk);
}

SEC(".struct_ops.link")
struct tcp_congestion_ops tcpls_rejected = {
	.ssthresh = (void *)bad_ssthresh,
	.cong_avoid = (void *)bad_cong_avoid,
	.undo_cwnd = (void *)bad_undo_cwnd,
	.name = "tcpls_rejected",
};

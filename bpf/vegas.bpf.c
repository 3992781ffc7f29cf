/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * TCP Vegas (Brakmo and Peterson, 1995) as "tcpls_vegas": a delay-based
 * controller, the one the TCPLS paper ships as eBPF (§5.6). A port of
 * Linux's net/ipv4/tcp_vegas.c. Once per round trip it compares the
 * window with what the smallest RTT seen (baseRTT) says the path holds:
 * `diff` is the number of segments queued in the network; it grows the
 * window while fewer than alpha are queued and shrinks it past beta, so it
 * keeps queues short where loss-based controllers fill them.
 */
#include "tcpls_ca.h"

char _license[] SEC("license") = "GPL";

/* Segments queued in the network that Vegas aims to keep between. */
#define VEGAS_ALPHA 2
#define VEGAS_BETA 4
/* Leave slow start when more than this many segments are queued. */
#define VEGAS_GAMMA 1

/* Per connection, in the socket's icsk_ca_priv (at most 104 bytes). */
struct vegas {
	u32 beg_snd_nxt;  /* right edge of the round trip being measured */
	u32 min_rtt;      /* smallest RTT (us) of that round trip */
	u32 base_rtt;     /* smallest RTT (us) ever: the path without queues */
	u16 cnt_rtt;      /* RTT samples in this round trip */
	u8 doing_vegas;   /* 0 while recovering from loss: Reno then */
	u8 ca_state;      /* the last state set_state reported */
};

static __always_inline void vegas_enable(struct sock *sk)
{
	const struct tcp_sock *tp = tcp_sk(sk);
	struct vegas *v = inet_csk_ca(sk);

	v->doing_vegas = 1;
	v->beg_snd_nxt = tp->snd_nxt;
	v->cnt_rtt = 0;
	v->min_rtt = 0x7fffffff;
}

static __always_inline void vegas_reset(struct sock *sk)
{
	struct vegas *v = inet_csk_ca(sk);

	v->base_rtt = 0x7fffffff;
	vegas_enable(sk);
}

SEC("struct_ops")
void BPF_PROG(vegas_init, struct sock *sk)
{
	struct vegas *v = inet_csk_ca(sk);

	v->ca_state = TCP_CA_Open;
	vegas_reset(sk);
}

SEC("struct_ops")
void BPF_PROG(vegas_pkts_acked, struct sock *sk, const struct ack_sample *sample)
{
	struct vegas *v = inet_csk_ca(sk);
	u32 vrtt;

	if (sample->rtt_us < 0)
		return;
	/* Never zero, so that comparisons with the initial value hold. */
	vrtt = sample->rtt_us + 1;
	if (vrtt < v->base_rtt)
		v->base_rtt = vrtt;
	v->min_rtt = min(v->min_rtt, vrtt);
	v->cnt_rtt++;
}

SEC("struct_ops")
void BPF_PROG(vegas_set_state, struct sock *sk, u8 new_state)
{
	struct vegas *v = inet_csk_ca(sk);

	v->ca_state = new_state;
	if (new_state == TCP_CA_Open)
		vegas_enable(sk);
	else
		v->doing_vegas = 0;
}

SEC("struct_ops")
void BPF_PROG(vegas_cwnd_event, struct sock *sk, int event)
{
	/* After idle the queue estimate is stale: measure again. */
	if (event == CA_EVENT_CWND_RESTART || event == CA_EVENT_TX_START)
		vegas_reset(sk);
}

static __always_inline u32 vegas_ssthresh_of(const struct tcp_sock *tp)
{
	return min(tp->snd_ssthresh, tp->snd_cwnd);
}

/* tcp_current_ssthresh(): keep 3/4 of the window as ssthresh unless the
 * window is being reduced. */
static __always_inline u32 current_ssthresh(const struct sock *sk)
{
	const struct tcp_sock *tp = tcp_sk(sk);
	const struct vegas *v = inet_csk_ca(sk);

	if (v->ca_state == TCP_CA_CWR || v->ca_state == TCP_CA_Recovery)
		return tp->snd_ssthresh;
	return max(tp->snd_ssthresh, (tp->snd_cwnd >> 1) + (tp->snd_cwnd >> 2));
}

SEC("struct_ops")
void BPF_PROG(vegas_cong_avoid, struct sock *sk, u32 ack, u32 acked)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct vegas *v = inet_csk_ca(sk);

	if (!v->doing_vegas) {
		tcpls_reno_cong_avoid(sk, acked);
		return;
	}
	if (after(ack, v->beg_snd_nxt)) {
		/* A round trip ended: decide once for it. */
		v->beg_snd_nxt = tp->snd_nxt;
		if (v->cnt_rtt <= 2) {
			/* Too few samples to tell queueing from jitter. */
			tcpls_reno_cong_avoid(sk, acked);
		} else {
			u32 rtt = v->min_rtt, cwnd = tp->snd_cwnd, diff;
			u64 target = (u64)cwnd * v->base_rtt;

			if (rtt == 0)
				rtt = 1;
			target /= rtt;
			/* Segments queued: cwnd * (rtt - base) / base. */
			diff = (u64)cwnd * (rtt - v->base_rtt) / v->base_rtt;
			if (diff > VEGAS_GAMMA && tcp_in_slow_start(tp)) {
				tp->snd_cwnd = min(cwnd, (u32)target + 1);
				tp->snd_ssthresh = vegas_ssthresh_of(tp);
			} else if (tcp_in_slow_start(tp)) {
				tcpls_slow_start(tp, acked);
			} else if (diff > VEGAS_BETA) {
				tp->snd_cwnd = cwnd - 1;
				tp->snd_ssthresh = vegas_ssthresh_of(tp);
			} else if (diff < VEGAS_ALPHA) {
				tp->snd_cwnd = cwnd + 1;
			}
			if (tp->snd_cwnd < 2)
				tp->snd_cwnd = 2;
			else if (tp->snd_cwnd > tp->snd_cwnd_clamp)
				tp->snd_cwnd = tp->snd_cwnd_clamp;
			tp->snd_ssthresh = current_ssthresh(sk);
		}
		v->cnt_rtt = 0;
		v->min_rtt = 0x7fffffff;
	} else if (tcp_in_slow_start(tp)) {
		tcpls_slow_start(tp, acked);
	}
}

SEC("struct_ops")
u32 BPF_PROG(vegas_ssthresh, struct sock *sk)
{
	return tcpls_reno_ssthresh(sk);
}

SEC("struct_ops")
u32 BPF_PROG(vegas_undo_cwnd, struct sock *sk)
{
	return tcpls_reno_undo_cwnd(sk);
}

SEC(".struct_ops.link")
struct tcp_congestion_ops tcpls_vegas = {
	.init = (void *)vegas_init,
	.ssthresh = (void *)vegas_ssthresh,
	.cong_avoid = (void *)vegas_cong_avoid,
	.set_state = (void *)vegas_set_state,
	.cwnd_event = (void *)vegas_cwnd_event,
	.pkts_acked = (void *)vegas_pkts_acked,
	.undo_cwnd = (void *)vegas_undo_cwnd,
	.name = "tcpls_vegas",
};

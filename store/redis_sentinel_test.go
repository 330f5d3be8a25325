package store_test

import (
	"context"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sseloop/sseloop/internal/redistest"
	"github.com/sseloop/sseloop/store"
)

// TestSentinelFailoverKeepsAcknowledgedEvents kills the Redis primary with
// SIGKILL under a steady publish load, with two replicas, three sentinels and
// WaitReplicas 1. Why: with wait_replicas a trigger's 200 promises that the
// event survives the loss of the primary; after the failover every
// acknowledged Append must be in the replay from 0. Bounded: at most 45 s.
func TestSentinelFailoverKeepsAcknowledgedEvents(t *testing.T) {
	primary := redistest.Start(t)
	// Two replicas: after the failover the new primary still has one, so
	// WAIT 1 can be satisfied again (with one, triggers would get 503 until
	// a replica is back: safe, but the test wants writes to resume).
	var replicas []*redistest.Server
	for range 2 {
		replicas = append(replicas, redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())))
	}
	const master = "sseloop-test"
	sentinels := redistest.StartSentinels(t, master, primary, 3)
	waitSentinelsReady(t, master, sentinels)

	r := openRedis(t, store.RedisConfig{
		SentinelMaster: master, SentinelAddrs: sentinels, Prefix: newPrefix(),
		WaitReplicas: 1, WaitTimeout: 500 * time.Millisecond,
	}, store.Options{MaxEvents: 100000, SweepInterval: -1})

	var acked []uint64
	var failed, afterKill int
	var lastErr error
	var killedAt, backAt time.Time
	deadline := time.Now().Add(45 * time.Second)
	publish := func(i int) bool {
		ctx, cancel := context.WithTimeout(bg, 2*time.Second)
		defer cancel()
		evs := []store.Event{{Key: []string{"a", "b"}[i%2], Data: []byte(strconv.Itoa(i))}}
		if err := r.Append(ctx, evs); err != nil {
			lastErr = err
			failed++
			return false
		}
		acked = append(acked, evs[0].ID)
		return true
	}
	i := 0
	for ; len(acked) < 200 && time.Now().Before(deadline); i++ {
		publish(i)
	}
	// The replicas stop receiving (frozen): the next writes reach only the
	// primary, which then dies. With WAIT they are not acknowledged; without
	// it they would be, and lost.
	for _, rep := range replicas {
		if err := rep.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		publish(i)
		i++
	}
	primary.Kill(t)
	killedAt = time.Now()
	for _, rep := range replicas {
		if err := rep.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	for ; i < 20000 && time.Now().Before(deadline) && afterKill < 100; i++ {
		if !publish(i) {
			time.Sleep(20 * time.Millisecond) // bounded by the deadline; the failover takes seconds
			continue
		}
		if afterKill == 0 {
			backAt = time.Now()
		}
		afterKill++
	}
	if afterKill < 100 {
		t.Fatalf("after killing the primary %d Appends succeeded within the deadline (%d failed): no failover (last error: %v)", afterKill, failed, lastErr)
	}
	t.Logf("%d acknowledged, %d failed; writes resumed %v after the kill", len(acked), failed, backAt.Sub(killedAt).Round(time.Millisecond))

	got, err := r.Replay(bg, []string{"a", "b"}, 0, len(acked)+failed+10)
	if err != nil {
		t.Fatal(err)
	}
	have := make(map[uint64]bool, len(got))
	for _, e := range got {
		have[e.ID] = true
	}
	var lost []uint64
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged events lost in the failover, e.g. %v", len(lost), lost[:min(len(lost), 5)])
	}
}

// waitSentinelsReady waits until every sentinel knows the replica and the
// other sentinels, so that a failover can happen.
func waitSentinelsReady(t *testing.T, master string, addrs []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: a, DisableIdentity: true})
		defer c.Close()
		for {
			reps, err1 := c.Replicas(bg, master).Result()
			sens, err2 := c.Sentinels(bg, master).Result()
			if err1 == nil && err2 == nil && len(reps) == 2 && len(sens) == len(addrs)-1 &&
				!slices.ContainsFunc(reps, func(m map[string]string) bool { return m["flags"] != "slave" }) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sentinel %s not ready: replicas %v (%v), sentinels %d (%v)", a, reps, err1, len(sens), err2)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

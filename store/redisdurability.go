package store

import (
	"context"
	"fmt"
	"strings"
)

// DurabilityWarning compares Options.Sync with what the Redis server keeps
// (CONFIG GET appendonly appendfsync) and returns why an acknowledged event
// could be lost that the policy promises to keep, or "" when Redis keeps at
// least as much:
//
//	SyncAlways       appendonly yes, appendfsync always
//	SyncEverySecond  appendonly yes, appendfsync always or everysec
//	SyncNever        anything
//
// Managed Redis often refuses CONFIG: then the warning says the settings
// could not be checked, so the policy is never ignored silently. Replicas
// (RedisConfig.WaitReplicas) are mentioned, as they keep events through the
// loss of the primary but not through a restart of every server.
func (r *Redis) DurabilityWarning(ctx context.Context) string {
	want := r.opts.Sync
	if want == SyncNever {
		return ""
	}
	v, err := r.c.ConfigGet(ctx, "append*").Result()
	if err != nil {
		return fmt.Sprintf("store.sync is %s but Redis persistence could not be read (CONFIG GET: %v): make sure appendonly is yes and appendfsync is %s",
			want, err, map[SyncPolicy]string{SyncAlways: "always", SyncEverySecond: "everysec or always"}[want])
	}
	aof, fsync := strings.ToLower(v["appendonly"]), strings.ToLower(v["appendfsync"])
	replicas := ""
	if r.replicas > 0 {
		replicas = fmt.Sprintf(" (WAIT for %d replicas keeps them through the loss of the primary, not through a restart of every Redis)", r.replicas)
	}
	switch {
	case aof != "yes":
		return fmt.Sprintf("store.sync is %s but Redis has appendonly %q: a Redis restart loses every event%s", want, aof, replicas)
	case want == SyncAlways && fsync != "always":
		return fmt.Sprintf("store.sync is always but Redis has appendfsync %q: a crash of the Redis host can lose the last second of acknowledged events%s", fsync, replicas)
	case want == SyncEverySecond && fsync != "always" && fsync != "everysec":
		return fmt.Sprintf("store.sync is everysecond but Redis has appendfsync %q: a crash of the Redis host can lose about 30 s of acknowledged events%s", fsync, replicas)
	}
	return ""
}

package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yaml := "heartbeat: 10s\npoll: 50ms\nstore:\n  path: /from/file\n  sync: never\nlimits:\n  max_keys: 7\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"SSELOOP_POLL=75ms", "SSELOOP_STORE__PATH=/from/env", "UNRELATED=1"}
	args := []string{"--config", file, "--store.path", "/from/flag", "--listen", "127.0.0.1:9999"}
	cfg, _, err := loadConfig(args, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"default retry", cfg.Engine.Retry, 3 * time.Second},
		{"file heartbeat", cfg.Engine.Heartbeat, 10 * time.Second},
		{"file sync", cfg.Store.Sync, "never"},
		{"file nested int", cfg.Engine.Limits.MaxKeys, 7},
		{"env over file", cfg.Engine.Poll, 75 * time.Millisecond},
		{"flag over env", cfg.Store.Path, "/from/flag"},
		{"flag", cfg.Engine.Listen, "127.0.0.1:9999"},
		{"default nested", cfg.History.MaxEvents, 1000},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestInvalidValueNamesTheKey(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  []string
		yaml string
		key  string
	}{
		{name: "flag_duration", args: []string{"--heartbeat", "banana"}, key: "heartbeat"},
		{name: "env_duration", env: []string{"SSELOOP_HEARTBEAT=banana"}, key: "heartbeat"},
		{name: "file_duration", yaml: "limits:\n  header_timeout: soon\n", key: "header_timeout"},
		{name: "bare_number_duration", yaml: "heartbeat: 30\n", key: "heartbeat"},
		{name: "env_int", env: []string{"SSELOOP_LIMITS__MAX_KEYS=lots"}, key: "max_keys"},
		{name: "unknown_key", yaml: "hearbeat: 30s\n", key: "hearbeat"},
		{name: "log_level", args: []string{"--log.level", "loud"}, key: "log.level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.yaml != "" {
				file := filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(file, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", file)
			}
			_, _, err := loadConfig(args, tt.env, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("err = %v, want it to name %q", err, tt.key)
			}
		})
	}
}

func TestPrintConfig(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"--print-config", "--heartbeat", "15s"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"heartbeat: 15s", "listen: :8080", "max_events: 1000", "sync: everysecond"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("print-config lacks %q:\n%s", want, out.String())
		}
	}
}

func TestListKeysFromEnvFileAndFlags(t *testing.T) {
	// Why: auth.public_keys and friends are lists; an environment value must
	// split on commas like a flag does, not become one pattern "a,b".
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("cors:\n  allowed_origins: [\"https://a.example\", \"https://b.example\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := loadConfig([]string{"--config", file, "--auth.publish_keys", "k1,k2"},
		[]string{"SSELOOP_AUTH__PUBLIC_KEYS=news:*,status"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want []string
	}{
		{"env", cfg.Engine.Auth.PublicKeys, []string{"news:*", "status"}},
		{"flag", cfg.Engine.Auth.PublishKeys, []string{"k1", "k2"}},
		{"file", cfg.Engine.CORS.AllowedOrigins, []string{"https://a.example", "https://b.example"}},
	}
	for _, c := range checks {
		if strings.Join(c.got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestPrintConfigRedactsSecrets(t *testing.T) {
	// Why: --print-config output is pasted into tickets; it must not leak
	// the JWT secret or the publish keys.
	var out, errb bytes.Buffer
	code := run([]string{"--print-config", "--auth.jwt_secret", "s3cret-s3cret", "--auth.publish_keys", "pk-123",
		"--mercure.publisher_jwt.key", "mercure-s3cret"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "s3cret") || strings.Contains(out.String(), "pk-123") ||
		strings.Contains(out.String(), "mercure-s3cret") {
		t.Fatalf("print-config shows a secret:\n%s", out.String())
	}
}

func TestRedisDocConfigLoads(t *testing.T) {
	// Why: docs/REDIS.md's YAML examples must be configs sseloop accepts.
	b, err := os.ReadFile("../../docs/REDIS.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(b), "```yaml\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("docs/REDIS.md has no yaml example")
	}
	for i, blk := range blocks {
		yml, _, _ := strings.Cut(blk, "```")
		path := filepath.Join(t.TempDir(), "doc.yaml")
		if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := loadConfig([]string{"--config", path}, nil, io.Discard)
		if err != nil {
			t.Fatalf("yaml example %d does not load: %v", i, err)
		}
		if r := cfg.Store.Redis; i == 0 && (r.WatchPrefix != "cake_" || r.Sentinel.Master != "mymaster" || len(r.Sentinel.Addrs) != 3 || r.WaitReplicas != 1) {
			t.Errorf("yaml example %d loaded as %+v", i, r)
		}
	}
}

// TestDirectPollOnlyWithWatchPrefix: without watched app keys the engine
// runs no direct-poke poller at all (it would walk every subscribed key
// each interval for nothing); with a watch prefix it gets the interval.
func TestDirectPollOnlyWithWatchPrefix(t *testing.T) {
	if got := (RedisConfig{DirectPoll: time.Second}).directPoll(); got != 0 {
		t.Errorf("no watch prefix: direct poll %v, want 0", got)
	}
	if got := (RedisConfig{WatchPrefix: "cake_", DirectPoll: time.Second}).directPoll(); got != time.Second {
		t.Errorf("watch prefix: direct poll %v, want 1s", got)
	}
}

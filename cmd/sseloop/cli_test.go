package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/sseloop/sseloop/engine"
	"github.com/sseloop/sseloop/internal/option"
	"github.com/sseloop/sseloop/internal/redistest"
)

const exampleConfig = "../../configs/sseloop.yaml"

func TestExampleConfigMatchesOptions(t *testing.T) {
	// Why: configs/sseloop.yaml is the documentation of every key. It must
	// list exactly the keys the program reads, each with a comment, and show
	// the program's own defaults: a default changed in the code but not in
	// the file would be documented wrongly.
	k := koanf.New(".")
	if err := k.Load(file.Provider(exampleConfig), yaml.Parser()); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, o := range options() {
		want = append(want, o.Key)
	}
	got := k.Keys()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("configs/sseloop.yaml keys\n %q\nprogram keys\n %q", got, want)
	}

	cfg, _, err := loadConfig([]string{"--config", exampleConfig}, nil, io.Discard)
	if err != nil {
		t.Fatalf("the example config does not load: %v", err)
	}
	def := defaultConfig()
	for _, o := range options() {
		g := option.Field(reflect.ValueOf(cfg), o.Key).Interface()
		d := option.Field(reflect.ValueOf(def), o.Key).Interface()
		if !reflect.DeepEqual(g, d) {
			t.Errorf("%s: the file says %v, the default is %v", o.Key, g, d)
		}
	}

	// Every key line has a comment right above it.
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	keyLine := regexp.MustCompile(`^\s*([a-z_]+):\s*\S`)
	for i, line := range lines {
		if keyLine.MatchString(line) && (i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#")) {
			t.Errorf("configs/sseloop.yaml line %d has no comment above it: %q", i+1, line)
		}
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run([]string{arg}, nil, &out, &errb); code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errb.String())
			}
			if errb.Len() != 0 {
				t.Errorf("stderr %q", errb.String())
			}
			help := out.String()
			for _, want := range []string{"sseloop healthcheck", "--config", "--print-config", "--version", "--help"} {
				if !strings.Contains(help, want) {
					t.Errorf("--help lacks %q", want)
				}
			}
			// Undo the wrapping of long descriptions.
			flat := strings.Join(strings.Fields(help), " ")
			for _, o := range options() {
				if o.Key == "sources" {
					continue // file only
				}
				line := regexp.MustCompile(`--` + regexp.QuoteMeta(o.Key) + `(\[=true\|false\]| \S+) ` + regexp.QuoteMeta(strings.Join(strings.Fields(o.Help), " ")))
				if !line.MatchString(flat) {
					t.Errorf("--help has no line for --%s with its help %q", o.Key, o.Help)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !regexp.MustCompile(`^sseloop \S+ commit \S+ ` + regexp.QuoteMeta(runtime.Version()) + "\n$").MatchString(out.String()) {
		t.Fatalf("--version printed %q", out.String())
	}
}

func TestPrintConfigRunsFullValidation(t *testing.T) {
	// Why: --print-config is how an operator checks a config before a
	// deploy; it must fail exactly where start-up would.
	tests := []struct {
		name string
		args []string
		env  []string
		key  string
	}{
		{name: "store_sync", args: []string{"--store.sync", "sometimes"}, key: "store.sync"},
		{name: "store_driver", args: []string{"--store.driver", "postgres"}, key: "store.driver"},
		{name: "negative_limit", env: []string{"SSELOOP_LIMITS__MAX_KEYS=-1"}, key: "limits.max_keys"},
		{name: "missing_public_key_file", args: []string{"--auth.jwt_public_key", "/nonexistent/key.pem"}, key: "key.pem"},
		{name: "bad_origin", args: []string{"--cors.allowed_origins", "not a url"}, key: "origin"},
		{name: "zero_heartbeat", args: []string{"--heartbeat", "0s"}, key: "heartbeat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"--print-config"}, tt.args...), tt.env, &out, &errb)
			if code == 0 || !strings.Contains(errb.String(), tt.key) {
				t.Fatalf("exit %d, stderr %q; want non-zero naming %q", code, errb.String(), tt.key)
			}
		})
	}
}

func TestPrintConfigSameFromFileEnvAndFlags(t *testing.T) {
	// Why: one value must mean one thing wherever it is written; env
	// values used to print as strings ("5") and a YAML list string as one
	// item while the env form split on commas.
	file := filepath.Join(t.TempDir(), "c.yaml")
	yml := "heartbeat: 15s\nhistory:\n  max_events: 5\nreuseport: true\nauth:\n  public_keys: \"news:*, status\"\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	sources := map[string]struct {
		args []string
		env  []string
	}{
		"file": {args: []string{"--config", file}},
		"env": {env: []string{"SSELOOP_HEARTBEAT=15s", "SSELOOP_HISTORY__MAX_EVENTS=5", "SSELOOP_REUSEPORT=true",
			"SSELOOP_AUTH__PUBLIC_KEYS=news:*,status"}},
		"flags": {args: []string{"--heartbeat", "15s", "--history.max_events", "5", "--reuseport",
			"--auth.public_keys", "news:*,status"}},
	}
	outs := map[string]string{}
	for name, src := range sources {
		var out, errb bytes.Buffer
		if code := run(append([]string{"--print-config"}, src.args...), src.env, &out, &errb); code != 0 {
			t.Fatalf("%s: exit %d: %s", name, code, errb.String())
		}
		outs[name] = out.String()
	}
	for _, want := range []string{"heartbeat: 15s\n", "max_events: 5\n", "reuseport: true\n", "- news:*\n", "- status\n", "max_conns: 0\n"} {
		if !strings.Contains(outs["env"], want) {
			t.Errorf("print-config lacks %q:\n%s", want, outs["env"])
		}
	}
	if outs["file"] != outs["env"] || outs["env"] != outs["flags"] {
		t.Errorf("outputs differ\nfile:\n%s\nenv:\n%s\nflags:\n%s", outs["file"], outs["env"], outs["flags"])
	}
}

func TestPrintConfigRedactsSourceHeaders(t *testing.T) {
	// Why: a source's Authorization header is the app's own credential.
	file := filepath.Join(t.TempDir(), "c.yaml")
	yml := "sources:\n  - pattern: \"user:*\"\n    url: \"http://127.0.0.1:8000/sse/{key}\"\n    headers:\n      Authorization: \"Bearer app-topsecret\"\n      X-Other: other-secret\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"--print-config", "--config", file, "--store.redis.password", "pw-secret"},
		[]string{"SSELOOP_AUTH__JWT_SECRET=jwt-secret-jwt-secret-jwt-secret"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, secret := range []string{"topsecret", "other-secret", "pw-secret", "jwt-secret"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("print-config shows %q:\n%s", secret, out.String())
		}
	}
	for _, want := range []string{"Authorization: (redacted)", "pattern: user:*"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("print-config lacks %q:\n%s", want, out.String())
		}
	}
}

func TestEnvErrorsNameTheVariable(t *testing.T) {
	tests := []struct{ env, want string }{
		{"SSELOOP_LIMITS__MAX_KEYS=lots", "SSELOOP_LIMITS__MAX_KEYS"},
		{"SSELOOP_HEARTBEAT=soon", "SSELOOP_HEARTBEAT"},
		{"SSELOOP_REUSEPORT=maybe", "SSELOOP_REUSEPORT"},
		{"SSELOOP_LISTN=:9000", "SSELOOP_LISTN"},
		{"SSELOOP_PORT_HTTP=8080", "SSELOOP_PORT_HTTP"},
		{"SSELOOP_STORE__REDIS__PORT=6379", "SSELOOP_STORE__REDIS__PORT"},
		{"SSELOOP_LISTEN_PORT=8080", "SSELOOP_LISTEN_PORT"},
		{"SSELOOP_SOURCES=x", "SSELOOP_SOURCES"},
	}
	for _, tt := range tests {
		_, _, err := loadConfig(nil, []string{tt.env}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), strings.SplitN(tt.env, "=", 2)[1]+" ") {
			t.Errorf("%s: err = %v, want it to name %s", tt.env, err, tt.want)
		}
	}
}

// kubernetesEnv is what Kubernetes injects into every pod of a namespace
// that has a Service named "sseloop" with a port named http.
var kubernetesEnv = []string{
	"SSELOOP_PORT=tcp://10.96.0.12:8080",
	"SSELOOP_PORT_8080_TCP=tcp://10.96.0.12:8080",
	"SSELOOP_PORT_8080_TCP_PROTO=tcp",
	"SSELOOP_PORT_8080_TCP_PORT=8080",
	"SSELOOP_PORT_8080_TCP_ADDR=10.96.0.12",
	"SSELOOP_SERVICE_HOST=10.96.0.12",
	"SSELOOP_SERVICE_PORT=8080",
	"SSELOOP_SERVICE_PORT_HTTP=8080",
	// A second Service named sseloop-redis.
	"SSELOOP_REDIS_SERVICE_HOST=10.96.0.13",
	"SSELOOP_REDIS_SERVICE_PORT=6379",
	"SSELOOP_REDIS_PORT=tcp://10.96.0.13:6379",
	"SSELOOP_REDIS_PORT_6379_TCP_ADDR=10.96.0.13",
}

func TestKubernetesServiceLinksIgnored(t *testing.T) {
	// Why: a Service named sseloop made every pod crash-loop with
	// `unknown key "port"`.
	cfg, fo, err := loadConfig(nil, append(slices.Clone(kubernetesEnv), "SSELOOP_HEARTBEAT=5s"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.Heartbeat.String() != "5s" || len(fo.ignoredEnv) != len(kubernetesEnv) {
		t.Fatalf("heartbeat %v, ignored %q", cfg.Engine.Heartbeat, fo.ignoredEnv)
	}
}

func TestKubernetesServiceLinksProcessStarts(t *testing.T) {
	p := startProcessEnv(t, kubernetesEnv, "--log.level", "debug")
	resp, err := http.Get("http://" + p.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
}

func TestMetricsListenHidesPublicMetrics(t *testing.T) {
	// Why: metrics.listen exists to keep metrics off the public port.
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	status := func(method, url string) int {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	maddr := free()
	p := startProcess(t, "--metrics.listen", maddr)
	if got := status("GET", "http://"+p.addr+"/metrics"); got != 404 {
		t.Errorf("public GET /metrics: %d, want 404", got)
	}
	if got := status("HEAD", "http://"+maddr+"/metrics"); got != 200 {
		t.Errorf("HEAD on metrics.listen: %d", got)
	}
	maddr = free()
	p = startProcess(t, "--metrics.listen", maddr, "--metrics.public")
	if got := status("GET", "http://"+p.addr+"/metrics"); got != 200 {
		t.Errorf("public GET /metrics with metrics.public: %d, want 200", got)
	}
}

func TestReadmeConfigTableMatchesOptions(t *testing.T) {
	// Why: README.md's configuration table is a second place where readers
	// look up defaults; it must name every key and show the real default.
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	text = text[strings.Index(text, "\n## Configuration\n"):]
	text = text[:strings.Index(text[1:], "\n## ")+1]
	rows := map[string]string{} // key -> default cell, for one-key rows
	named := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| (`[^|]+`) \\| ([^|]+) \\|")
	for _, m := range row.FindAllStringSubmatch(text, -1) {
		keys := regexp.MustCompile("`([a-z_.]+)`").FindAllStringSubmatch(m[1], -1)
		for _, k := range keys {
			named[k[1]] = true
		}
		if len(keys) == 1 {
			rows[keys[0][1]] = strings.TrimSpace(m[2])
		}
	}
	for _, o := range options() {
		if !named[o.Key] {
			t.Errorf("README.md's configuration table does not name %s", o.Key)
			continue
		}
		cell, ok := rows[o.Key]
		if !ok {
			continue // a row for several keys
		}
		var want string
		switch d := o.Default.(type) {
		case string:
			want = d
			if d == "" {
				want = `""`
			}
		case []string, []engine.Source:
			want = "[]"
		case time.Duration:
			want = shortDuration(d)
			if got, err := time.ParseDuration(strings.Trim(cell, "`")); err == nil && got == d {
				want = strings.Trim(cell, "`")
			}
		default:
			want = fmt.Sprint(d)
		}
		if cell != "`"+want+"`" {
			t.Errorf("README.md: %s default %s, the program's is `%s`", o.Key, cell, want)
		}
	}
}

func TestHealthcheckFollowsEnvListen(t *testing.T) {
	// Why: the container HEALTHCHECK runs `sseloop healthcheck` with the
	// image's environment; an address set with SSELOOP_LISTEN must be the
	// one it probes, not the default :8080.
	p := startProcess(t)
	var errb bytes.Buffer
	if code := run([]string{"healthcheck"}, []string{"SSELOOP_LISTEN=" + p.addr}, io.Discard, &errb); code != 0 {
		t.Fatalf("healthcheck of %s: exit %d: %s", p.addr, code, errb.String())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	if code := run([]string{"healthcheck"}, []string{"SSELOOP_LISTEN=" + closed}, io.Discard, io.Discard); code != 1 {
		t.Fatalf("healthcheck of a closed port: exit %d, want 1", code)
	}
}

func TestStartupLineShowsRedisAddress(t *testing.T) {
	// Why: with the Redis store the start-up line printed
	// path=:memory: sync=everysecond, settings that do not apply.
	srv := redistest.Start(t)
	p := startProcess(t, "--store.driver", "redis", "--store.redis.addr", srv.Addr())
	if !strings.Contains(p.line, "store=redis addr="+srv.Addr()) || strings.Contains(p.line, "path=") || strings.Contains(p.line, "sync=") {
		t.Fatalf("start-up line %q", p.line)
	}
}

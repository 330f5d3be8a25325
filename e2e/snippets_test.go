package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Every fenced code block in README.md and docs/*.md is preceded by a marker
// line `<!-- snippet: NAME -->`. TestSnippetsAreAllCovered makes sure each
// block has one and that each name is either run by a test (snippetRunners)
// or listed with the reason it cannot be (snippetNotRun). The runners use
// the block's text as written; only addresses (ports, hosts) and paths are
// substituted, and code that a snippet calls but does not define (an app's
// render function, a Composer package) is given a minimal stand-in.

// snippet is one fenced code block of the documentation.
type snippet struct {
	file string // relative to the repository root
	line int    // of the opening fence
	name string
	lang string
	body string
}

var markerRE = regexp.MustCompile(`^<!-- snippet: ([a-z0-9-]+) -->$`)

// loadSnippets reads every fenced block of README.md and docs/*.md.
func loadSnippets(t *testing.T) []snippet {
	t.Helper()
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{"../README.md"}, files...)
	var out []snippet
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i < len(lines); i++ {
			if !strings.HasPrefix(lines[i], "```") {
				continue
			}
			s := snippet{file: strings.TrimPrefix(f, "../"), line: i + 1, lang: strings.TrimPrefix(lines[i], "```")}
			if i > 0 {
				if m := markerRE.FindStringSubmatch(lines[i-1]); m != nil {
					s.name = m[1]
				}
			}
			var body []string
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				body = append(body, lines[i])
			}
			s.body = strings.Join(body, "\n") + "\n"
			out = append(out, s)
		}
	}
	return out
}

func findSnippet(t *testing.T, name string) snippet {
	t.Helper()
	for _, s := range loadSnippets(t) {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("no snippet %q in README.md or docs/", name)
	return snippet{}
}

// snippetNotRun lists the blocks no test runs, with the reason.
var snippetNotRun = map[string]string{
	"quickstart-test":       "the test suite itself; .ci/run runs this exact command",
	"quickstart-output":     "output, compared by quickstart-curl",
	"ssebench-output":       "output of a 19,000-connection run",
	"scaleout-diagram":      "a diagram",
	"redis-sentinel-config": "a config file: cmd/sseloop TestRedisDocConfigLoads loads it and checks its values",
	"architecture":          "a folder list",
	"scale-script":          "100,000 connections for minutes; bench/compare_test.go runs the same code at 300",
	"micro-benchmarks":      "benchmarks take minutes of CPU; CI keeps to its time budget",
	"ssebench-compare":      "19,000 connections for minutes; bench/compare_test.go runs the same code at 300",
	"storm-compare":         "19,000 connections killed and restarted; bench TestCompareStorm runs the same code at 300",
	"storm-output":          "output of a 19,000-connection storm run",
	"million-script":        "a million connections for minutes; bench TestMillionScaledDown runs the same script at 60,000",
	"million-output":        "figures of a million.sh run",
	"ssebench-compare-rate": "19,000 connections for minutes; bench/compare_test.go runs the same code at 300",
	"idle-cpu":              "19,000 connections and a 20 s window; bench/compare_test.go runs the idle scenario at 300",
	"mercure-symfony-env":   "the app's .env; mercure-sseloop-env's runner publishes with it",
}

// snippetRunners run the blocks.
var snippetRunners = map[string]func(t *testing.T, s snippet){
	"quickstart-run":      runQuickstartServer,
	"quickstart-curl":     runQuickstartCurl,
	"docker":              runDockerEnv,
	"php-recipe":          runPHPRecipe,
	"browser-recipe":      runBrowserRecipe,
	"token-claims":        runTokenClaims,
	"php-jwt-mint":        runPHPJWTMint,
	"go-jwt-mint":         runGoJWTMint,
	"php-publish-key":     runPHPPublishKey,
	"scaleout-run":        runScaleoutCommand,
	"php-redis-cache":     runPHPRedisCache,
	"ulimit":              runUlimit,
	"sysctl":              runSysctl,
	"nginx":               runNginxSnippet,
	"caddy":               runCaddySnippet,
	"haproxy":             runHAProxySnippet,
	"browser-listen":      runBrowserListen,
	"php-sse-push":        runPHPSsePush,
	"node-subscriber":     runNodeSubscriber,
	"python-subscriber":   runPythonSubscriber,
	"mercure-sseloop-env": runMercureMigration,
}

func TestSnippetsAreAllCovered(t *testing.T) {
	// Why: "a new user can copy any block and it works" holds only if no
	// block is left out; a new block without a marker or a runner fails here.
	seen := map[string]bool{}
	for _, s := range loadSnippets(t) {
		if s.name == "" {
			t.Errorf("%s:%d: code block without a <!-- snippet: NAME --> marker line above it", s.file, s.line)
			continue
		}
		if seen[s.name] {
			t.Errorf("%s:%d: snippet name %q used twice", s.file, s.line, s.name)
		}
		seen[s.name] = true
		_, run := snippetRunners[s.name]
		_, skip := snippetNotRun[s.name]
		if run == skip {
			t.Errorf("%s:%d: snippet %q must be in exactly one of snippetRunners and snippetNotRun", s.file, s.line, s.name)
		}
	}
	for name := range snippetRunners {
		if !seen[name] {
			t.Errorf("snippetRunners has %q, which no document has", name)
		}
	}
	for name := range snippetNotRun {
		if !seen[name] {
			t.Errorf("snippetNotRun has %q, which no document has", name)
		}
	}
}

func TestSnippets(t *testing.T) {
	names := make([]string, 0, len(snippetRunners))
	for name := range snippetRunners {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			snippetRunners[name](t, findSnippet(t, name))
		})
	}
}

// ---- tools and processes ----

// requireTool returns the path of an external program, or skips the test
// (fails under SSELOOPTEST_REQUIRE_EXTERNAL=1).
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if requireExternal {
		t.Fatalf("%s not installed (SSELOOPTEST_REQUIRE_EXTERNAL=1): apt-get install -y %s", name, pkg)
	}
	t.Skipf("%s not installed: apt-get install -y %s (set SSELOOPTEST_REQUIRE_EXTERNAL=1 to fail instead)", name, pkg)
	return ""
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// sseloopBin builds cmd/sseloop once per test binary and returns its path.
func sseloopBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sseloop-e2e-bin")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "sseloop"), "../cmd/sseloop").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/sseloop: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "sseloop")
}

// cleanEnv is the test's environment without SSELOOP_ variables (sseloop
// reads each one as config).
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSELOOP_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// proc is a process a test started, in its own process group, so that the
// test can end it and everything it started (go run's child).
type proc struct {
	cmd  *exec.Cmd
	out  *lineBuffer
	done chan struct{}
}

// start runs cmd with stdout and stderr collected; the process group is
// killed when the test ends.
func start(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, out: newLineBuffer(), done: make(chan struct{})}
	cmd.Stdout = p.out
	if cmd.Stderr == nil { // else the caller keeps stderr apart
		cmd.Stderr = p.out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(cmd.Path), p.out.String())
		}
	})
	return p
}

// lineBuffer collects output and lets a test wait for a pattern in it.
type lineBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{}
}

func newLineBuffer() *lineBuffer { return &lineBuffer{changed: make(chan struct{})} }

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the output matches re and returns the match.
func (l *lineBuffer) waitFor(t *testing.T, re *regexp.Regexp, within time.Duration) []string {
	t.Helper()
	deadline := time.After(within)
	for {
		l.mu.Lock()
		m := re.FindStringSubmatch(l.b.String())
		ch := l.changed
		l.mu.Unlock()
		if m != nil {
			return m
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %q within %v in output:\n%s", re, within, l.String())
		}
	}
}

var listeningRE = regexp.MustCompile(`msg="sseloop listening" addr=(\S+)`)

// startSseloop runs the built binary with env and args on a free loopback
// port and returns its address.
func startSseloop(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(sseloopBin(t), append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = cleanEnv(env...)
	p := start(t, cmd)
	return p.out.waitFor(t, listeningRE, 20*time.Second)[1]
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitHealthy polls GET /healthz until 200 (a process is starting).
func waitHealthy(t *testing.T, addr string, p *proc, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("exited before serving:\n%s", p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within %v:\n%s", addr, within, p.out.String())
		}
	}
}

// stream is an open SSE response read line by line.
type stream struct {
	lines chan string
}

// openStream subscribes with GET path (and headers) and waits for the
// response head; it fails the test unless the status is 200.
func openStream(t *testing.T, base, path string, header ...string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	s := &stream{lines: make(chan string, 1024)}
	go func() {
		defer resp.Body.Close()
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	return s
}

// expect reads lines until one equals want.
func (s *stream) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	var got []string
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("stream ended before %q; got %q", want, got)
			}
			if l == want {
				return
			}
			got = append(got, l)
		case <-deadline:
			t.Fatalf("no line %q within 15s; got %q", want, got)
		}
	}
}

func post(t *testing.T, url, data string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(data))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// runScript runs a program (php, node, python3) on a script file and
// returns its combined output and exit code.
func runScript(t *testing.T, env []string, prog, ext, script string) (string, int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "snippet."+ext)
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, f)
	cmd.Env = cleanEnv(env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s: %v", prog, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// hs256 signs claims with secret, as an app would.
func hs256(t *testing.T, claims jwt.MapClaims, secret string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ---- README ----

func runQuickstartServer(t *testing.T, s snippet) {
	if testing.Short() {
		t.Skip("go run compiles sseloop")
	}
	// The snippet as written, run from the repository root; the address
	// comes from the environment so that the test needs no fixed port.
	addr := freeAddr(t)
	cmd := exec.Command("bash", "-euc", s.body)
	cmd.Dir = ".."
	cmd.Env = cleanEnv("SSELOOP_LISTEN=" + addr)
	p := start(t, cmd)
	waitHealthy(t, addr, p, 3*time.Minute)
}

var idLineRE = regexp.MustCompile(`(?m)^id: \d+$`)

func runQuickstartCurl(t *testing.T, s snippet) {
	requireTool(t, "curl", "curl")
	addr := startSseloop(t, nil)
	cmds := strings.Split(strings.TrimSpace(strings.ReplaceAll(s.body, "localhost:8080", addr)), "\n")
	if len(cmds) != 2 {
		t.Fatalf("expected two commands (subscriber, trigger), got %q", cmds)
	}
	sub := exec.Command("bash", "-c", cmds[0])
	sub.Env = cleanEnv()
	sub.Stderr = io.Discard // curl's progress meter; the README shows stdout
	subscriber := start(t, sub)
	subscriber.out.waitFor(t, regexp.MustCompile(`retry: 3000\n\n`), 10*time.Second)
	out, err := exec.Command("bash", "-c", cmds[1]).Output()
	if err != nil || !strings.HasPrefix(string(out), `{"id":"`) {
		t.Fatalf("trigger: %v %s", err, out)
	}
	want := findSnippet(t, "quickstart-output").body
	// Ids are whatever the store hands out; the rest is exact.
	subscriber.out.waitFor(t, regexp.MustCompile(`data: second line\n\n`), 10*time.Second)
	got := idLineRE.ReplaceAllString(subscriber.out.String(), "id: N")
	if got != idLineRE.ReplaceAllString(want, "id: N") {
		t.Fatalf("subscriber printed\n%q\nREADME says\n%q", got, want)
	}
}

// runDockerEnv checks the docker run command's configuration with the
// binary (no Docker daemon in CI): its SSELOOP_ variables start a server
// whose store file is written in the volume directory, that refuses
// triggers without the key and accepts them with it, and whose healthcheck
// follows SSELOOP_LISTEN.
func runDockerEnv(t *testing.T, s snippet) {
	vol := t.TempDir()
	var env []string
	for _, m := range regexp.MustCompile(`-e (SSELOOP_\w+)=(\S+)`).FindAllStringSubmatch(s.body, -1) {
		env = append(env, m[1]+"="+strings.ReplaceAll(m[2], "/var/lib/sseloop", vol))
	}
	if len(env) < 3 || !strings.Contains(s.body, "-v sseloop-data:/var/lib/sseloop") {
		t.Fatalf("docker snippet changed shape: %v\n%s", env, s.body)
	}
	var key string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "SSELOOP_AUTH__PUBLISH_KEYS="); ok {
			key = v
		}
	}
	addr := startSseloop(t, env)
	base := "http://" + addr
	if code, _ := post(t, base+"/trigger/orders", "x", "Authorization", "Bearer wrong"); code != 401 {
		t.Errorf("trigger with a wrong key: %d, want 401", code)
	}
	if code, body := post(t, base+"/trigger/orders", "hello", "Authorization", "Bearer "+key); code != 200 {
		t.Errorf("trigger with the key: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(vol, "events.db")); err != nil {
		t.Errorf("store file not in the volume: %v", err)
	}
	hc := exec.Command(sseloopBin(t), "healthcheck")
	hc.Env = cleanEnv(append(env, "SSELOOP_LISTEN="+addr)...)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Errorf("healthcheck with SSELOOP_LISTEN: %v %s", err, out)
	}
}

// phpStubs stand in for the app code the PHP recipe calls but does not
// define.
const phpCacheStub = `class Cache { static function write($k, $v) {} static function put($k, $v) {} }
$key = 'user:42';
`

func runPHPRecipe(t *testing.T, s snippet) {
	php := requireTool(t, "php", "php-cli php-curl")
	addr := startSseloop(t, nil)
	sub := openStream(t, "http://"+addr, "/events?key=user:42")
	script := "<?php\n" + phpCacheStub + strings.ReplaceAll(s.body, "127.0.0.1:8080", addr)
	if out, code := runScript(t, nil, php, "php", script); code != 0 {
		t.Fatalf("php exit %d: %s", code, out)
	}
	sub.expect(t, "event: notification")
	sub.expect(t, `data: {"unread":3}`)

	// A refused trigger throws instead of passing silently.
	authed := startSseloop(t, []string{"SSELOOP_AUTH__PUBLISH_KEYS=some-key"})
	script = "<?php\n" + phpCacheStub + strings.ReplaceAll(s.body, "127.0.0.1:8080", authed)
	if out, code := runScript(t, nil, php, "php", script); code == 0 || !strings.Contains(out, "HTTP 401") {
		t.Fatalf("refused trigger: exit %d, output %s", code, out)
	}
}

func runTokenClaims(t *testing.T, s snippet) {
	var claims jwt.MapClaims
	if err := json.Unmarshal([]byte(s.body), &claims); err != nil {
		t.Fatal(err)
	}
	claims["exp"] = time.Now().Add(time.Hour).Unix() // the example's date is in the past by now
	const secret = "a-test-secret-of-at-least-32-bytes!!"
	addr := startSseloop(t, []string{"SSELOOP_AUTH__JWT_SECRET=" + secret})
	tok := hs256(t, claims, secret)
	base := "http://" + addr
	for path, want := range map[string]int{
		"/events?key=user:42&key=room:lobby&token=" + tok: 200,
		"/events?key=user:43&token=" + tok:                403,
		"/events?key=user:42":                             401,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// phpJWTStub is a minimal stand-in for firebase/php-jwt's JWT::encode with
// HS256 (Composer packages cannot be installed in CI): the same token format,
// so sseloop's acceptance of the snippet's token is what is tested.
const phpJWTStub = `<?php
namespace Firebase\JWT {
    class JWT {
        static function b64(string $s): string { return rtrim(strtr(base64_encode($s), '+/', '-_'), '='); }
        static function encode(array $payload, string $key, string $alg): string {
            if ($alg !== 'HS256') throw new \Exception("stub supports HS256 only");
            $h = self::b64(json_encode(['typ' => 'JWT', 'alg' => $alg]));
            $p = self::b64(json_encode($payload));
            return "$h.$p." . self::b64(hash_hmac('sha256', "$h.$p", $key, true));
        }
    }
}
namespace {
$user = (object) ['id' => 42];
`

func runPHPJWTMint(t *testing.T, s snippet) {
	php := requireTool(t, "php", "php-cli")
	const secret = "a-test-secret-of-at-least-32-bytes!!"
	addr := startSseloop(t, []string{"SSELOOP_AUTH__JWT_SECRET=" + secret})
	out, code := runScript(t, []string{"SSELOOP_JWT_SECRET=" + secret}, php, "php", phpJWTStub+s.body+"\n}\n")
	if code != 0 {
		t.Fatalf("php exit %d: %s", code, out)
	}
	m := regexp.MustCompile(`EventSource\('(/events\?key=user:42&token=[\w.-]+)'\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no EventSource URL in the output: %s", out)
	}
	sub := openStream(t, "http://"+addr, m[1])
	// With a JWT key configured, publishing needs a token too.
	pub := hs256(t, jwt.MapClaims{"sseloop": map[string]any{"publish": []string{"user:*"}}}, secret)
	if code, body := post(t, "http://"+addr+"/trigger/user:42", "for 42", "Authorization", "Bearer "+pub); code != 200 {
		t.Fatalf("trigger: %d %s", code, body)
	}
	sub.expect(t, "data: for 42")
}

func runGoJWTMint(t *testing.T, s snippet) {
	if testing.Short() {
		t.Skip("compiles a program")
	}
	// A module of its own that uses this repository's golang-jwt version,
	// from the module cache (no network).
	dir := t.TempDir()
	sum, err := os.ReadFile("../go.sum")
	if err != nil {
		t.Fatal(err)
	}
	var jwtSum []string
	for _, l := range strings.Split(string(sum), "\n") {
		if strings.HasPrefix(l, "github.com/golang-jwt/jwt/v5 ") {
			jwtSum = append(jwtSum, l)
		}
	}
	version := strings.Fields(jwtSum[0])[1]
	files := map[string]string{
		"go.mod": "module snippet\n\ngo 1.24\n\nrequire github.com/golang-jwt/jwt/v5 " + version + "\n",
		"go.sum": strings.Join(jwtSum, "\n") + "\n",
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"time\"\n\n\t\"github.com/golang-jwt/jwt/v5\"\n)\n\n" +
			"func main() {\n\tuserID, secret := \"42\", os.Getenv(\"SECRET\")\n" + s.body +
			"\tif err != nil {\n\t\tpanic(err)\n\t}\n\tfmt.Println(token)\n}\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const secret = "a-test-secret-of-at-least-32-bytes!!"
	cmd := exec.Command("go", "run", ".")
	cmd.Dir = dir
	cmd.Env = cleanEnv("SECRET="+secret, "GOFLAGS=-mod=mod", "GOPROXY=off")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go run: %v\n%s", err, stderr)
	}
	addr := startSseloop(t, []string{"SSELOOP_AUTH__JWT_SECRET=" + secret})
	openStream(t, "http://"+addr, "/events?key=user:42&key=room:x&token="+strings.TrimSpace(string(out)))
}

func runPHPPublishKey(t *testing.T, s snippet) {
	php := requireTool(t, "php", "php-cli php-curl")
	const key = "publish-key-for-the-test"
	addr := startSseloop(t, []string{"SSELOOP_AUTH__PUBLISH_KEYS=" + key})
	sub := openStream(t, "http://"+addr, "/events?key=user:42")
	script := "<?php\n$payload = ['unread' => 7];\n" + strings.ReplaceAll(s.body, "sseloop:8080", addr) + "echo \"id=$id\\n\";\n"
	out, code := runScript(t, []string{"SSELOOP_PUBLISH_KEY=" + key}, php, "php", script)
	if code != 0 || !regexp.MustCompile(`^id=\d+\n$`).MatchString(out) {
		t.Fatalf("php exit %d, output %q (want only the id: the answer must not be echoed)", code, out)
	}
	sub.expect(t, `data: {"unread":7}`)
	out, code = runScript(t, []string{"SSELOOP_PUBLISH_KEY=wrong"}, php, "php", script)
	if code == 0 || !strings.Contains(out, "HTTP 401") {
		t.Fatalf("wrong key: exit %d, output %s", code, out)
	}
}

func runScaleoutCommand(t *testing.T, s snippet) {
	rs := startRedis(t)
	addr := freeAddr(t)
	body := strings.ReplaceAll(s.body, "10.0.0.5:6379", rs)
	body = strings.ReplaceAll(body, "--listen :8080", "--listen "+addr)
	cmd := exec.Command("bash", "-euc", body)
	cmd.Env = cleanEnv("PATH=" + filepath.Dir(sseloopBin(t)) + ":" + os.Getenv("PATH"))
	p := start(t, cmd)
	waitHealthy(t, addr, p, 20*time.Second)
	sub := openStream(t, "http://"+addr, "/events?key=orders")
	post(t, "http://"+addr+"/trigger/orders", "through redis")
	sub.expect(t, "data: through redis")
}

// startRedis starts redis-server on a free port for the test.
func startRedis(t *testing.T) string {
	t.Helper()
	bin := requireTool(t, "redis-server", "redis-server")
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	p := start(t, cmd)
	p.out.waitFor(t, regexp.MustCompile(`Ready to accept connections`), 10*time.Second)
	return addr
}

// phpCakeRedisStub stands in for CakePHP's Redis cache engine (prefix
// "cake_"): write() sets <prefix><key> to the value as is, over a raw RESP
// connection (no php-redis needed); and for README's sse_push, which has its
// own snippet test: here it posts with curl and checks the status.
const phpCakeRedisStub = `<?php
class Cache {
    static function write(string $key, $value): void {
        $k = 'cake_' . $key;
        $v = (string) $value;
        $r = fsockopen('127.0.0.1', (int) getenv('REDIS_PORT'));
        fwrite($r, "*3\r\n$3\r\nSET\r\n$" . strlen($k) . "\r\n$k\r\n$" . strlen($v) . "\r\n$v\r\n");
        if (trim(fgets($r)) !== '+OK') throw new Exception('redis SET failed');
        fclose($r);
    }
}
function sse_push(string $key, string $data): string {
    $ch = curl_init(getenv('SSELOOP_URL') . '/trigger/' . rawurlencode($key));
    curl_setopt_array($ch, [CURLOPT_POST => true, CURLOPT_POSTFIELDS => $data, CURLOPT_RETURNTRANSFER => true]);
    $body = curl_exec($ch);
    if (curl_getinfo($ch, CURLINFO_RESPONSE_CODE) !== 200) throw new Exception('trigger failed');
    return $body;
}
$id = 42;
$payload = ['unread' => 3];
`

// runPHPRedisCache runs README's CakePHP cache write against a node that
// watches the "cake_" prefix: the write becomes a poke, and sse_push an
// event with data.
func runPHPRedisCache(t *testing.T, s snippet) {
	php := requireTool(t, "php", "php-cli php-curl")
	rs := startRedis(t)
	addr := startSseloop(t, nil, "--store.driver", "redis", "--store.redis.addr", rs,
		"--store.redis.watch_prefix", "cake_", "--store.redis.direct_poll", "100ms")
	sub := openStream(t, "http://"+addr, "/events?key=user:42")
	_, port, _ := net.SplitHostPort(rs)
	env := []string{"REDIS_PORT=" + port, "SSELOOP_URL=http://" + addr}
	// The node reads a baseline of the watched key once the key has a
	// subscriber; a write before that read is the baseline, not a change.
	// So run the snippet (each run writes a new microtime) until a poke
	// arrives; every run also publishes the payload.
	var poke, data bool
	for attempt := 0; !(poke && data); attempt++ {
		if attempt == 100 {
			t.Fatalf("after 100 runs: poke %v, data event %v", poke, data)
		}
		if out, code := runScript(t, env, php, "php", phpCakeRedisStub+strings.TrimPrefix(s.body, "<?php")); code != 0 {
			t.Fatalf("php exit %d: %s", code, out)
		}
		deadline := time.After(300 * time.Millisecond) // a bound per attempt, not an assertion
	read:
		for {
			select {
			case l := <-sub.lines:
				poke = poke || strings.HasPrefix(l, `data: {"key":"user:42"`)
				data = data || l == `data: {"unread":3}`
			case <-deadline:
				break read
			}
		}
	}
}

// ---- docs/PRODUCTION.md ----

func runUlimit(t *testing.T, s snippet) {
	out, err := exec.Command("bash", "-euc", s.body+"\nulimit -n\n").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Operation not permitted") {
			t.Skipf("not allowed to raise the open-files limit here: %s", out)
		}
		t.Fatalf("%v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "1048576" {
		t.Fatalf("ulimit -n is %s", out)
	}
}

// runSysctl checks that every setting names a kernel parameter that exists
// (applying them would change the test machine).
func runSysctl(t *testing.T, s snippet) {
	for _, line := range strings.Split(s.body, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, " = ")
		if !ok || value == "" {
			t.Errorf("not key = value: %q", line)
			continue
		}
		path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if _, err := os.Stat(path); err != nil {
			if strings.HasPrefix(key, "net.netfilter.") {
				continue // only there while connection tracking is loaded
			}
			t.Errorf("%s: no such kernel parameter (%v)", key, err)
		}
	}
}

func runPHPSsePush(t *testing.T, s snippet) {
	php := requireTool(t, "php", "php-cli php-curl")
	addr := startSseloop(t, nil)
	sub := openStream(t, "http://"+addr, "/events?key=orders")
	script := "<?php\n" + strings.ReplaceAll(s.body, "127.0.0.1:8080", addr) +
		"echo \"id=$id\\n\";\necho 'again=' . sse_push('orders'), \"\\n\";\n"
	out, code := runScript(t, nil, php, "php", script)
	if code != 0 || !regexp.MustCompile(`^id=\d+\nagain=\d+\n$`).MatchString(out) {
		t.Fatalf("php exit %d, output %q", code, out)
	}
	sub.expect(t, "event: created")
	sub.expect(t, `data: {"total":42}`)
	// auth.jwt_secret ends loopback publishing: the push throws.
	jwtAddr := startSseloop(t, []string{"SSELOOP_AUTH__JWT_SECRET=a-test-secret-of-at-least-32-bytes!!"})
	script = "<?php\n" + strings.ReplaceAll(s.body, "127.0.0.1:8080", jwtAddr)
	if out, code := runScript(t, nil, php, "php", script); code == 0 || !strings.Contains(out, "HTTP 401") {
		t.Fatalf("refused push: exit %d, output %s", code, out)
	}
}

// runSubscriberProgram runs a Node or Python subscriber snippet, publishes
// two events and waits for the program to print both.
func runSubscriberProgram(t *testing.T, s snippet, prog, ext string, env ...string) {
	addr := startSseloop(t, nil)
	f := filepath.Join(t.TempDir(), "sub."+ext)
	if err := os.WriteFile(f, []byte(strings.ReplaceAll(s.body, "127.0.0.1:8080", addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prog, f)
	cmd.Env = cleanEnv(env...)
	p := start(t, cmd)
	// Wait until the program's stream is open: sseloop counts it.
	waitSubscribers(t, addr, 1)
	_, body := post(t, "http://"+addr+"/trigger/orders?event=created", "first\nsecond")
	p.out.waitFor(t, regexp.MustCompile(`(?m)^`+idOf(t, body)+` created first\nsecond$`), 10*time.Second)
	_, body = post(t, "http://"+addr+"/trigger/orders", "plain")
	p.out.waitFor(t, regexp.MustCompile(`(?m)^`+idOf(t, body)+` message plain$`), 10*time.Second)
}

// waitSubscribers waits until the server reports n open streams.
func waitSubscribers(t *testing.T, addr string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	want := fmt.Sprintf("\nsseloop_subscriptions %d\n", n)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), want) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond) // polling an observable condition, not a wait for time to pass
	}
	t.Fatalf("%s: never %d subscriptions", addr, n)
}

func runNodeSubscriber(t *testing.T, s snippet) {
	node := requireTool(t, "node", "nodejs")
	runSubscriberProgram(t, s, node, "js")
}

func runPythonSubscriber(t *testing.T, s snippet) {
	py := requireTool(t, "python3", "python3")
	runSubscriberProgram(t, s, py, "py", "PYTHONUNBUFFERED=1")
}

var idAnswerRE = regexp.MustCompile(`^\{"id":"(\d+)"\}\n?$`)

// idOf returns the id of a trigger answer {"id":"N"}.
func idOf(t *testing.T, body string) string {
	t.Helper()
	m := idAnswerRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("trigger answer %q", body)
	}
	return m[1]
}

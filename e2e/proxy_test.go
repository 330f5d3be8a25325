package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The reverse-proxy configs of docs/PRODUCTION.md, run with the proxies
// Debian 12 ships (nginx 1.22, Caddy 2.6, HAProxy 2.6). Each test starts
// the proxy with the documented block; only the listen port, the upstream
// port, certificate paths and the trigger network are substituted (the
// "app servers" network 10.0.0.0/8 becomes 127.0.0.2/32, a loopback source
// address the test dials from, so 127.0.0.1 plays "everyone else").

// appsNet replaces the documented trigger network.
const appsNet = "127.0.0.2/32"

// proxied is a running proxy in front of a running sseloop.
type proxied struct {
	sseloop string         // sseloop's address
	port    string         // the proxy's TLS port on 127.0.0.1
	roots   *x509.CertPool // trusts the proxy's certificate
}

// client returns an HTTPS client for https://localhost:<port> that dials
// from the loopback source address src and negotiates HTTP/2.
func (p *proxied) client(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", "127.0.0.1:"+p.port)
		},
		TLSClientConfig:   &tls.Config{RootCAs: p.roots, ServerName: "localhost"},
		ForceAttemptHTTP2: true,
	}}
}

func (p *proxied) url(path string) string { return "https://localhost:" + p.port + path }

// selfSigned writes a certificate for localhost and 127.0.0.1 and its key
// (PEM) into dir and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// replaceAll applies old/new pairs and fails when an old string is missing,
// so that a change to the documented config cannot silently skip a
// substitution.
func replaceAll(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("documented config lacks %q", pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// startBehindProxy starts sseloop with a 1s heartbeat (so the test sees
// heartbeats pass without waiting 30s) and returns it with a free port
// for the proxy.
func startBehindProxy(t *testing.T) *proxied {
	t.Helper()
	addr := startSseloop(t, nil, "--heartbeat", "1s")
	_, port, _ := net.SplitHostPort(freeAddr(t))
	return &proxied{sseloop: addr, port: port}
}

// waitListening waits until something accepts on 127.0.0.1:port.
func waitListening(t *testing.T, port string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			t.Fatalf("proxy exited:\n%s", p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not listening on %s:\n%s", port, p.out.String())
		}
	}
}

// checkProxy subscribes through the proxy over TLS and HTTP/2, triggers
// from the apps' address through the proxy, and checks that the event
// arrives while the stream stays open (a buffering proxy would hold these
// few bytes until kilobytes had accumulated), that heartbeats pass, and
// that a trigger from anyone else gets an explicit 403.
func checkProxy(t *testing.T, p *proxied) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.url("/events?key=orders"), nil)
	resp, err := p.client("127.0.0.1").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("subscribe through the proxy: %d %s %q", resp.StatusCode, resp.Proto, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func(what string, match func(string) bool) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("stream closed before %s", what)
				}
				if match(l) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %s through the proxy", what)
			}
		}
	}
	next("retry line", func(l string) bool { return strings.HasPrefix(l, "retry:") })
	waitSubscribers(t, p.sseloop, 1)

	code, body := postWith(t, p.client("127.0.0.2"), p.url("/trigger/orders?event=created"), "through the proxy")
	if code != 200 || !strings.HasPrefix(body, `{"id":"`) {
		t.Fatalf("trigger from the apps' network: %d %q", code, body)
	}
	next("event", func(l string) bool { return l == "data: through the proxy" })
	next("heartbeat", func(l string) bool { return strings.HasPrefix(l, ":") })

	code, body = postWith(t, p.client("127.0.0.1"), p.url("/trigger/orders"), "from outside")
	if code != 403 {
		t.Fatalf("trigger from outside the apps' network: %d %q, want an explicit 403", code, body)
	}
}

func postWith(t *testing.T, c *http.Client, url, data string) (int, string) {
	t.Helper()
	resp, err := c.Post(url, "text/plain", strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// ---- nginx ----

func startNginx(t *testing.T, s snippet) *proxied {
	t.Helper()
	bin := requireTool(t, "nginx", "nginx-light")
	p := startBehindProxy(t)
	dir := t.TempDir()
	_ = os.Chmod(dir, 0o777) // workers run as nobody when started by root
	cert, key, roots := selfSigned(t, dir)
	p.roots = roots
	site := replaceAll(t, s.body,
		"server 127.0.0.1:8080;", "server "+p.sseloop+";",
		"listen 443 ssl http2;", "listen 127.0.0.1:"+p.port+" ssl http2;",
		"/etc/letsencrypt/live/example.com/fullchain.pem", cert,
		"/etc/letsencrypt/live/example.com/privkey.pem", key,
		"allow 10.0.0.0/8;", "allow "+appsNet+";",
	)
	// The documented block goes into the http context of a minimal main
	// config that keeps every file in the test's directory.
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, site)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", "stderr", "-p", dir, "-c", confFile)
	proc := start(t, cmd)
	waitListening(t, p.port, proc)
	return p
}

func runNginxSnippet(t *testing.T, s snippet) { checkProxy(t, startNginx(t, s)) }

// ---- Caddy ----

// caddyGlobal is prepended to the documented site block: no admin API,
// Caddy's internal CA for localhost without touching the system trust
// store, loopback only, and no HTTP/3 (UDP) listener.
const caddyGlobal = `{
	admin off
	skip_install_trust
	default_bind 127.0.0.1
	servers {
		protocols h1 h2
	}
}
`

func startCaddy(t *testing.T, s snippet) *proxied {
	t.Helper()
	bin := requireTool(t, "caddy", "caddy")
	p := startBehindProxy(t)
	dir := t.TempDir()
	site := replaceAll(t, s.body,
		"example.com {", "localhost:"+p.port+" {",
		"127.0.0.1:8080", p.sseloop,
		"remote_ip 10.0.0.0/8", "remote_ip "+appsNet,
	)
	confFile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(confFile, []byte(caddyGlobal+site), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", confFile, "--adapter", "caddyfile")
	cmd.Env = cleanEnv("HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	proc := start(t, cmd)
	waitListening(t, p.port, proc)
	// Caddy's internal CA root, written on start.
	root := filepath.Join(dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(root)
		if err == nil {
			p.roots = x509.NewCertPool()
			if p.roots.AppendCertsFromPEM(b) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Caddy root certificate at %s:\n%s", root, proc.out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling for a file to appear
	}
	// The site certificate is issued asynchronously: wait for a handshake
	// that verifies against the root (a log line can come before Caddy
	// serves the certificate).
	for {
		c, err := tls.Dial("tcp", "127.0.0.1:"+p.port, &tls.Config{RootCAs: p.roots, ServerName: "localhost"})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS handshake with Caddy: %v\n%s", err, proc.out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling for the certificate to be served
	}
	return p
}

func runCaddySnippet(t *testing.T, s snippet) { checkProxy(t, startCaddy(t, s)) }

// ---- HAProxy ----

func startHAProxy(t *testing.T, s snippet) *proxied {
	t.Helper()
	bin := requireTool(t, "haproxy", "haproxy")
	p := startBehindProxy(t)
	dir := t.TempDir()
	cert, key, roots := selfSigned(t, dir)
	p.roots = roots
	cb, _ := os.ReadFile(cert)
	kb, _ := os.ReadFile(key)
	bundle := filepath.Join(dir, "example.com.pem")
	if err := os.WriteFile(bundle, append(cb, kb...), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := replaceAll(t, s.body,
		"bind :443 ssl", "bind 127.0.0.1:"+p.port+" ssl",
		"/etc/haproxy/example.com.pem", bundle,
		"src 10.0.0.0/8", "src "+appsNet,
		"127.0.0.1:8080", p.sseloop,
	)
	confFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", confFile)
	proc := start(t, cmd)
	waitListening(t, p.port, proc)
	return p
}

func runHAProxySnippet(t *testing.T, s snippet) { checkProxy(t, startHAProxy(t, s)) }

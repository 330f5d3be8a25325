package e2e

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/sseloop/sseloop/engine"
)

const mercureSecret = "!ChangeThisMercureHubJWTSecretKey!"

func startMercureServer(t *testing.T) string {
	t.Helper()
	base, _ := runEngine(t, "127.0.0.1:0", func(c *engine.Config) {
		c.Mercure.Enabled = true
		c.Mercure.PublisherJWT.Key = mercureSecret
		c.Mercure.SubscriberJWT.Key = mercureSecret
	})
	return base
}

func mercureHS256(t *testing.T, claim map[string]any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"mercure": claim}).SignedString([]byte(mercureSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMercurePrivateUpdateInBrowser: a page's EventSource (withCredentials)
// with a mercureAuthorization cookie receives a private update that an app
// published exactly as symfony/mercure's Hub::publish sends it. Why: this is
// the path every Symfony app with private updates takes, through a real
// browser's cookie and EventSource handling, not our own parser.
func TestMercurePrivateUpdateInBrowser(t *testing.T) {
	base := startMercureServer(t)
	ctx := newBrowser(t)

	sub := mercureHS256(t, map[string]any{"subscribe": []string{"https://example.com/users/7/{rest}"}})
	const book = "https://example.com/books/1"
	script := `document.cookie = "mercureAuthorization=` + sub + `; path=/";
window.got = [];
window.es = new EventSource('/.well-known/mercure?topic=' + encodeURIComponent('` + book + `'), {withCredentials: true});
window.es.onopen = () => { window.opened = true; };
window.es.onmessage = (e) => { window.got.push({id: e.lastEventId, data: e.data}); };
true`
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](script)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.opened === true`)); err != nil {
		t.Fatalf("EventSource did not open: %v", err)
	}

	// symfony/mercure: http_build_query with topic[] collapsed to repeated
	// topic=, spaces as +, private=on, Authorization: Bearer.
	body := "topic=" + url.QueryEscape(book) + "&topic=" + url.QueryEscape("https://example.com/users/7/books") +
		"&data=" + url.QueryEscape("only for user 7") + "&private=on&id=book-1-v2&type=&retry="
	req, err := http.NewRequest("POST", base+"/.well-known/mercure", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+mercureHS256(t, map[string]any{"publish": []string{"*"}}))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(answer) != "book-1-v2" {
		t.Fatalf("publish: %d %q", resp.StatusCode, answer)
	}
	type got struct{ ID, Data string }
	evs, err := chromedp.Run(ctx, chromedp.Poll[[]got](`window.got.length > 0 && window.got`))
	if err != nil {
		t.Fatalf("the page did not receive the private update: %v", err)
	}
	if len(evs) != 1 || evs[0].ID != "book-1-v2" || evs[0].Data != "only for user 7" {
		t.Fatalf("page got %+v", evs)
	}
}

// runMercureMigration runs README's migration example: sseloop started
// with the documented environment (this snippet), and an app publishing
// with the documented .env (mercure-symfony-env) exactly as
// symfony/mercure does, to a subscriber on MERCURE_PUBLIC_URL's path.
func runMercureMigration(t *testing.T, s snippet) {
	env := dotenv(t, s.body)
	app := map[string]string{}
	for _, kv := range dotenv(t, findSnippet(t, "mercure-symfony-env").body) {
		k, v, _ := strings.Cut(kv, "=")
		app[k] = v
	}
	addr := startSseloop(t, env)
	hubURL := strings.Replace(app["MERCURE_URL"], "127.0.0.1:8080", addr, 1)
	public, err := url.Parse(app["MERCURE_PUBLIC_URL"])
	if err != nil {
		t.Fatal(err)
	}
	const topic = "https://example.com/books/1"
	resp, err := http.Get("http://" + addr + public.Path + "?topic=" + url.QueryEscape(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("subscribe: %d", resp.StatusCode)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"mercure": map[string]any{"publish": []string{"*"}}}).
		SignedString([]byte(app["MERCURE_JWT_SECRET"]))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", hubURL, strings.NewReader("topic="+url.QueryEscape(topic)+"&data=a+b"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+tok)
	presp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := io.ReadAll(presp.Body)
	presp.Body.Close()
	if presp.StatusCode != 200 {
		t.Fatalf("publish with the app's secret: %d %s", presp.StatusCode, id)
	}
	want := []string{"id: " + string(id), "data: a b"}
	timeout := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended, still waiting for %q", want)
			}
			if line == want[0] {
				want = want[1:]
			}
		case <-timeout:
			t.Fatalf("subscriber did not get %q", want)
		}
	}
}

// dotenv parses KEY=VALUE lines, dropping one level of quotes.
func dotenv(t *testing.T, body string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not KEY=VALUE: %q", line)
		}
		out = append(out, k+"="+strings.Trim(v, `'"`))
	}
	return out
}

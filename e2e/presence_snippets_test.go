package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func init() {
	snippetRunners["presence-answer"] = runPresenceAnswer
	snippetRunners["browser-presence"] = runBrowserPresence
}

const presenceSecret = "a-test-secret-of-at-least-32-bytes!!"

// presenceToken mints a token for room:* with subject sub ("" = none).
func presenceToken(t *testing.T, sub string) string {
	claims := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sseloop": map[string]any{"subscribe": []string{"room:*"}}}
	if sub != "" {
		claims["sub"] = sub
	}
	return hs256(t, claims, presenceSecret)
}

// holdStream opens GET path with token and keeps it open until the test
// ends.
func holdStream(t *testing.T, url, token string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		cancel()
		t.Fatalf("subscribe: %d", resp.StatusCode)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
}

// runPresenceAnswer holds the snippet's five streams (four users, one with
// two) and checks that GET /presence/room:7 answers exactly the snippet.
func runPresenceAnswer(t *testing.T, s snippet) {
	var want any
	if err := json.Unmarshal([]byte(s.body), &want); err != nil {
		t.Fatal(err)
	}
	addr := startSseloop(t, []string{"SSELOOP_AUTH__JWT_SECRET=" + presenceSecret})
	base := "http://" + addr
	for _, sub := range []string{"42", "17", "9", "7", "9"} {
		holdStream(t, base+"/events/room:7", presenceToken(t, sub))
	}
	waitSubscribers(t, addr, 5)
	req, _ := http.NewRequest("GET", base+"/presence/room:7", nil)
	req.Header.Set("Authorization", "Bearer "+presenceToken(t, ""))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got any
	if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("GET /presence/room:7: %d %s, want the snippet %s (%v)", resp.StatusCode, b, s.body, err)
	}
}

// runBrowserPresence runs the snippet in Chromium with a token of user 42
// and checks the page shows 1, then 2 online when user 17 joins.
func runBrowserPresence(t *testing.T, s snippet) {
	ctx := newBrowser(t)
	addr := startSseloop(t, []string{"SSELOOP_AUTH__JWT_SECRET=" + presenceSecret,
		"SSELOOP_PRESENCE__KEYS=room:*", "SSELOOP_PRESENCE__INTERVAL=200ms"})
	base := "http://" + addr
	prelude := `document.body.innerHTML = '<span id="online"></span>'; var token = '` + presenceToken(t, "42") + `';`
	runInPage(t, ctx, base, prelude, s.body)
	pollPage(t, ctx, `document.querySelector('#online').textContent === '1 online'`)
	holdStream(t, base+"/events/room:7", presenceToken(t, "17"))
	pollPage(t, ctx, `document.querySelector('#online').textContent === '2 online'`)
}

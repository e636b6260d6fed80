package server_test

import (
	"net/http"
	"testing"
)

// The server's root sends a browser to the console, whose files need no token; anything else
// at the root still does.
func TestConsoleIsServedOpen(t *testing.T) {
	e := startServer(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(e.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, path := range []string{"/ui", "/ui/", "/ui/plugins/analytics-plugin"} {
		resp, err := http.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	if res := e.rest(http.MethodPost, "/", "", "{}"); res.Status != http.StatusUnauthorized {
		t.Errorf("POST / without a token: %d %s", res.Status, res.Raw)
	}
}

package dashboard_test

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/dashboard"
	"github.com/switchboard/switchboard/internal/clustertest"
	"github.com/switchboard/switchboard/node"
)

// The page and its assets load without a key, as the right types, with a
// policy that keeps the page from loading or calling anything elsewhere.
func TestHandlerServesThePageWithoutAKey(t *testing.T) {
	srv := httptest.NewServer(dashboard.Handler("/ui/"))
	t.Cleanup(srv.Close)
	for file, ctype := range map[string]string{
		"/ui/":            "text/html",
		"/ui/style.css":   "text/css",
		"/ui/js/app.js":   "text/javascript",
		"/ui/js/drill.js": "text/javascript",
	} {
		resp, err := http.Get(srv.URL + file)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %s, want 200 %s", file, resp.StatusCode, resp.Header.Get("Content-Type"), ctype)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", file, csp)
		}
		if len(body) == 0 {
			t.Errorf("GET %s: empty", file)
		}
	}
	for _, missing := range []string{"/ui/js/", "/ui/nothing.js"} {
		resp, err := http.Get(srv.URL + missing)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", missing, resp.StatusCode)
		}
	}
	resp, err := http.Post(srv.URL+"/ui/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d, want 405", resp.StatusCode)
	}
}

// Every module and stylesheet the page names is embedded, and nothing is
// loaded from another origin: the dashboard works offline.
func TestAssetsAreSelfContained(t *testing.T) {
	ref := regexp.MustCompile(`(?:from\s+|import\s+|src=|href=)["']([^"']+)["']`)
	err := fs.WalkDir(dashboard.Assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(dashboard.Assets, p)
		if err != nil {
			return err
		}
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			switch {
			case strings.HasPrefix(target, "data:"):
				continue
			case strings.Contains(target, "//"):
				return fmt.Errorf("%s loads %s from elsewhere", p, target)
			}
			if _, err := fs.Stat(dashboard.Assets, path.Join(path.Dir(p), target)); err != nil {
				return fmt.Errorf("%s names %s: %v", p, target, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// With a separate admin listener, the dashboard is there and not on the
// public listener; its API calls still need the key.
func TestDashboardOnTheAdminListener(t *testing.T) {
	c := clustertest.Start(t, 1)
	// clustertest waits on the public listener's admin API, so the node
	// with an admin listener of its own joins after the first.
	port := clustertest.FreePorts(t, 1)[0]
	admin := c.AddNode("n2", func(cfg *node.Config) {
		cfg.AdminAddr = fmt.Sprintf("127.0.0.1:%d", port)
	}).AdminURL()
	get := func(url, key string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		url, key string
		want     int
	}{
		{admin + "/ui/", "", http.StatusOK},
		{admin + "/ui/js/app.js", "", http.StatusOK},
		{admin + "/v1/stats", "", http.StatusUnauthorized},
		{admin + "/v1/stats", clustertest.AdminKey, http.StatusOK},
		{c.URL("n2") + "/ui/", "", http.StatusNotFound},
		{c.URL("n1") + "/ui/", "", http.StatusOK},
	} {
		if got := get(tc.url, tc.key); got != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, got, tc.want)
		}
	}
}

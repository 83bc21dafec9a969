// Package dashboard serves Switchboard's operator dashboard (DESIGN.md
// §5a): plain HTML, CSS and ES modules embedded in the binary, so it
// works offline and needs no build step. The page and its assets load
// without a key; the page asks the operator for the admin key and sends
// it with every call it makes to the admin API, which checks it there.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Assets are the dashboard's files, rooted at its index.html.
var Assets = func() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed directive guarantees the directory
	}
	return sub
}()

// contentSecurityPolicy lets the page load only its own files and call
// only its own origin: the admin key it holds can go nowhere else.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard under prefix (say "/ui/"). Only GET and
// HEAD are served; the page must not be framed by another site.
func Handler(prefix string) http.Handler {
	files := http.StripPrefix(prefix, http.FileServerFS(Assets))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != prefix {
			http.NotFound(w, r) // no listings of the asset folders
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// The assets change with the binary: revalidate rather than keep
		// an old page after an upgrade.
		h.Set("Cache-Control", "no-cache")
		if strings.HasSuffix(r.URL.Path, ".js") {
			h.Set("Content-Type", "text/javascript; charset=utf-8")
		}
		files.ServeHTTP(w, r)
	})
}

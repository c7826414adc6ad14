// Package dashboard is Rel's web dashboard: server-rendered pages
// (html/template, embedded in the binary with no build step and nothing
// loaded from elsewhere) served under /ui/ on a server's HTTPS port, with
// live rollout pages over Server-Sent Events.
//
// People sign in with an ACL token, which the dashboard exchanges for a
// session cookie. Sessions live in the memory of the server that made
// them: a session is good on that server only, and ends when it
// restarts. Every request re-resolves the session's token, so revoking or
// expiring the token ends the session at once.
//
// The dashboard reads and acts only through gRPC methods called
// in-process (Backend.Invoke): a page sees what the token may read, and
// a button does what the same token could do with relctl, decided,
// audited and forwarded to the leader by the same code.
package dashboard

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Backend is what the dashboard needs of a server.
type Backend interface {
	// TokenPrincipal is the holder of the token whose secret hashes to
	// hash (auth.HashSecret), refused if it is unknown or expired.
	TokenPrincipal(hash string) (auth.Principal, error)
	// Invoke calls a unary gRPC method (its full name) with req as p,
	// through the server's own authorization, audit and forwarding.
	Invoke(ctx context.Context, p auth.Principal, method string, req proto.Message) (any, error)
}

// Config configures a Dashboard.
type Config struct {
	Backend Backend
	// Context ends live streams when it is cancelled (server shutdown).
	Context context.Context
	Logger  *slog.Logger
	// SessionTTL is how long a session lasts (default 12 h).
	SessionTTL time.Duration
	// Heartbeat is the interval of SSE comments that keep live streams
	// (and proxies in between) awake (default 15 s).
	Heartbeat time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Dashboard serves the web UI. Make it with New and mount it with Register.
type Dashboard struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessionStore
	pages    map[string]*template.Template
	static   http.Handler
}

// Prefix is the path the dashboard is served under.
const Prefix = "/ui/"

// New builds a dashboard; it starts no goroutine.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Backend == nil {
		return nil, errors.New("dashboard: no backend")
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Dashboard{cfg: cfg, log: cfg.Logger, sessions: newSessionStore(cfg.SessionTTL, cfg.Now)}
	if err := d.parseTemplates(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	d.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))
	return d, nil
}

// page is one page of the dashboard. Adding a page is a template file
// in templates/ (defining "content") and one entry here with the
// function that loads its data.
type page struct {
	// path is the route after GET, e.g. "/ui/hosts".
	path string
	// file is the template in templates/.
	file string
	// nav is the title shown in the navigation bar; "" keeps the page out
	// of it.
	nav string
	// load reads what the page shows, as the session's principal.
	load func(d *Dashboard, r *http.Request, v *view) (any, error)
}

// pages are the dashboard's pages, in navigation order.
var pages = []page{
	{path: "/ui/{$}", file: "overview.html", nav: "Overview", load: (*Dashboard).loadOverview},
	{path: "/ui/rollouts", file: "rollouts.html", nav: "Rollouts", load: (*Dashboard).loadRollouts},
	{path: "/ui/rollouts/{id}", file: "rollout.html", load: (*Dashboard).loadRollout},
	{path: "/ui/releases", file: "releases.html", nav: "Releases", load: (*Dashboard).loadReleases},
	{path: "/ui/hosts", file: "hosts.html", nav: "Hosts", load: (*Dashboard).loadHosts},
	{path: "/ui/approvals", file: "approvals.html", nav: "Approvals", load: (*Dashboard).loadApprovals},
	{path: "/ui/events", file: "events.html", nav: "Events", load: (*Dashboard).loadEvents},
	{path: "/ui/audit", file: "audit.html", nav: "Audit", load: (*Dashboard).loadAudit},
	{path: "/ui/report", file: "report.html", nav: "Report", load: (*Dashboard).loadReport},
}

// navItem is one link of the navigation bar.
type navItem struct {
	Title, Href string
}

var nav = func() []navItem {
	var out []navItem
	for _, p := range pages {
		if p.nav != "" {
			out = append(out, navItem{Title: p.nav, Href: strings.TrimSuffix(p.path, "{$}")})
		}
	}
	return out
}()

func (d *Dashboard) parseTemplates() error {
	base, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return err
	}
	d.pages = map[string]*template.Template{}
	for _, f := range append([]string{"login.html", "confirm.html", "error.html"}, pageFiles()...) {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+f)
		if err != nil {
			return err
		}
		d.pages[f] = t
	}
	return nil
}

func pageFiles() []string {
	var out []string
	for _, p := range pages {
		out = append(out, p.file)
	}
	return out
}

// Register mounts the dashboard on mux under /ui/.
func (d *Dashboard) Register(mux *http.ServeMux) {
	mux.Handle("GET "+Prefix+"static/", d.headers(d.static))
	mux.Handle("GET /ui", http.RedirectHandler(Prefix, http.StatusSeeOther))
	mux.Handle("GET /ui/login", d.headers(http.HandlerFunc(d.loginPage)))
	mux.Handle("POST /ui/login", d.headers(http.HandlerFunc(d.login)))
	mux.Handle("POST /ui/logout", d.headers(d.withSession(d.logout)))
	for _, p := range pages {
		mux.Handle("GET "+p.path, d.headers(d.withSession(d.pageHandler(p))))
	}
	mux.Handle("GET /ui/rollouts/{id}/live", d.headers(d.withSession(d.live)))
	mux.Handle("GET /ui/events/live", d.headers(d.withSession(d.liveEvents)))
	mux.Handle("POST /ui/rollouts/{id}/{action}", d.headers(d.withSession(d.control)))
}

// headers sets the security headers of every answer: nothing but this
// server's own scripts, styles and connections; no framing; no caching of
// pages that show a session's data.
func (d *Dashboard) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		if !strings.HasPrefix(r.URL.Path, Prefix+"static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// view is what every page template gets besides its own data.
type view struct {
	Title   string
	Nav     []navItem
	Path    string
	Session *session
	Who     string
	Flash   string
	Data    any
	p       auth.Principal
}

func (d *Dashboard) pageHandler(p page) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, v *view) {
		data, err := p.load(d, r, v)
		if err != nil {
			d.fail(w, r, v, err)
			return
		}
		v.Data = data
		v.Flash = r.URL.Query().Get("done")
		d.render(w, http.StatusOK, p.file, v)
	}
}

// render executes a page's "layout" into a buffer first, so a template
// error is a clean 500 and not half a page.
func (d *Dashboard) render(w http.ResponseWriter, code int, file string, v any) {
	var buf bytes.Buffer
	if err := d.pages[file].ExecuteTemplate(&buf, "layout", v); err != nil {
		d.log.Error("dashboard template", "page", file, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// fail shows err (a gRPC status from the server's own methods) as a page
// with the HTTP status that matches its code.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, v *view, err error) {
	st := status.Convert(err)
	code := httpCode(st.Code())
	if v == nil {
		v = &view{Nav: nav}
	}
	v.Title = http.StatusText(code)
	v.Data = struct {
		Code    int
		Message string
		Back    string
	}{code, st.Message(), r.Referer()}
	d.render(w, code, "error.html", v)
}

// httpCode maps the gRPC codes the server's methods answer to HTTP.
func httpCode(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
		return http.StatusConflict
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	case codes.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// safeNext is a path after login: only a path of the dashboard, never
// another host ("//evil" or "/\evil" would be one to a browser).
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.IsAbs() || u.Host != "" || !strings.HasPrefix(u.Path, Prefix) ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}

package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/auth"
)

// Cookie names. The session cookie is scoped to /ui/ and never readable
// by scripts; loginCookie carries the login form's CSRF value before
// there is a session.
const (
	sessionCookie = "rel_session"
	loginCookie   = "rel_login"
)

// session is one signed-in browser. It holds the hash of the token, not
// the secret: enough to re-resolve the token on every request.
type session struct {
	ID        string
	CSRF      string
	tokenHash string
	Name      string
	Expires   time.Time
}

// sessionStore keeps sessions in this server's memory. Expired sessions
// are dropped when looked up and swept at each login, so no goroutine is
// needed.
type sessionStore struct {
	ttl time.Duration
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*session
}

func newSessionStore(ttl time.Duration, now func() time.Time) *sessionStore {
	return &sessionStore{ttl: ttl, now: now, byID: map[string]*session{}}
}

// randomID is 32 random bytes, URL-safe base64.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (st *sessionStore) create(tokenHash, name string) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	for id, s := range st.byID {
		if !now.Before(s.Expires) {
			delete(st.byID, id)
		}
	}
	s := &session{ID: randomID(), CSRF: randomID(), tokenHash: tokenHash, Name: name, Expires: now.Add(st.ttl)}
	st.byID[s.ID] = s
	return s
}

func (st *sessionStore) get(id string) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.byID[id]
	if s == nil {
		return nil
	}
	if !st.now().Before(s.Expires) {
		delete(st.byID, id)
		return nil
	}
	return s
}

func (st *sessionStore) delete(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.byID, id)
}

// count is the number of sessions held, expired or not.
func (st *sessionStore) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.byID)
}

// sessionHandler serves a request of a signed-in browser.
type sessionHandler func(w http.ResponseWriter, r *http.Request, v *view)

// errSessionEnded: the session's token no longer resolves (revoked,
// expired) or no longer may read.
var errSessionEnded = status.Error(codes.Unauthenticated, "the session ended: its token was revoked, expired or may no longer read; sign in again")

// principal re-resolves a session's token: a revoked or expired token, or
// one that lost the read permission, ends the session.
func (d *Dashboard) principal(s *session) (auth.Principal, error) {
	p, err := d.cfg.Backend.TokenPrincipal(s.tokenHash)
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			return auth.Principal{}, err // this replica is catching up: not the token's fault
		}
		return auth.Principal{}, errSessionEnded
	}
	if !p.HasPermission(auth.Read) {
		return auth.Principal{}, errSessionEnded
	}
	return p, nil
}

// withSession runs next for a signed-in browser with a live token;
// anyone else is sent to the login page (GET) or refused (other methods,
// and the live stream, which a browser cannot follow to a form). Every
// POST must carry the session's CSRF token.
func (d *Dashboard) withSession(next sessionHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s *session
		if c, err := r.Cookie(sessionCookie); err == nil {
			s = d.sessions.get(c.Value)
		}
		var p auth.Principal
		err := errSessionEnded
		if s != nil {
			if p, err = d.principal(s); status.Code(err) == codes.Unauthenticated {
				d.sessions.delete(s.ID)
			}
		}
		if err != nil {
			if status.Code(err) == codes.Unavailable {
				d.fail(w, r, nil, err)
				return
			}
			clearCookie(w, sessionCookie)
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/live") {
				q := url.Values{"next": {r.URL.RequestURI()}}
				if s != nil {
					q.Set("ended", "1")
				}
				http.Redirect(w, r, "/ui/login?"+q.Encode(), http.StatusSeeOther)
				return
			}
			http.Error(w, status.Convert(err).Message(), http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if !sameOrigin(r) || !validCSRF(r.PostFormValue("csrf"), s.CSRF) {
				http.Error(w, "the form's CSRF token is missing or wrong, or it came from another site: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		next(w, r, &view{Nav: nav, Path: r.URL.Path, Session: s, Who: p.String(), p: p})
	})
}

func validCSRF(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// sameOrigin refuses a POST whose Origin header names another origin.
// Browsers send Origin on POSTs; SameSite=Strict and the CSRF token are
// the main defence, this one is cheap.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func setCookie(w http.ResponseWriter, name, value string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: Prefix, MaxAge: int(ttl / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// loginView is the login page's data.
type loginView struct {
	CSRF  string
	Next  string
	Error string
}

func (d *Dashboard) loginPage(w http.ResponseWriter, r *http.Request) {
	msg := ""
	if r.URL.Query().Get("ended") != "" {
		msg = "Your session ended: its token was revoked or expired. Sign in again."
	}
	d.showLogin(w, http.StatusOK, r.URL.Query().Get("next"), msg)
}

func (d *Dashboard) showLogin(w http.ResponseWriter, code int, next, msg string) {
	csrf := randomID()
	setCookie(w, loginCookie, csrf, 30*time.Minute)
	d.render(w, code, "login.html", &view{Title: "Sign in", Data: loginView{CSRF: csrf, Next: safeNext(next), Error: msg}})
}

// login exchanges a token secret for a session. The form's CSRF value
// must match the login cookie (double submit), so that another site
// cannot sign a browser in with a token of its choosing.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	next := r.PostFormValue("next")
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameOrigin(r) || !validCSRF(r.PostFormValue("csrf"), c.Value) {
		d.showLogin(w, http.StatusForbidden, next, "The sign-in form expired or came from another site: try again.")
		return
	}
	secret := strings.TrimSpace(r.PostFormValue("token"))
	if secret == "" {
		d.showLogin(w, http.StatusBadRequest, next, "Paste an ACL token's secret (relt_…): 'relctl acl token create NAME --role viewer' makes one.")
		return
	}
	hash := auth.HashSecret(secret)
	p, err := d.cfg.Backend.TokenPrincipal(hash)
	switch {
	case status.Code(err) == codes.Unavailable:
		d.showLogin(w, http.StatusServiceUnavailable, next, status.Convert(err).Message())
		return
	case err != nil:
		d.log.Warn("dashboard sign-in refused", "remote", r.RemoteAddr, "err", status.Convert(err).Message())
		d.showLogin(w, http.StatusUnauthorized, next, status.Convert(err).Message())
		return
	case !p.HasPermission(auth.Read):
		d.showLogin(w, http.StatusForbidden, next, p.String()+" may not read: the dashboard needs a token with a role that reads (viewer or more).")
		return
	}
	s := d.sessions.create(hash, p.String())
	d.log.Info("dashboard sign-in", "caller", p.String(), "remote", r.RemoteAddr)
	clearCookie(w, loginCookie)
	setCookie(w, sessionCookie, s.ID, d.cfg.SessionTTL)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request, v *view) {
	d.sessions.delete(v.Session.ID)
	clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

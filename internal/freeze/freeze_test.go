package freeze

import (
	"errors"
	"strings"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func berlin(t *testing.T, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func utc(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func weekend() *relv1.FreezeWindow {
	return &relv1.FreezeWindow{Name: "weekend", Apps: []string{"*"}, Environments: []string{"prod"},
		CronStart: "0 18 * * FRI", CronEnd: "0 8 * * MON", TimeZone: "Europe/Berlin", Reason: "weekend freeze"}
}

func TestEvaluateRecurring(t *testing.T) {
	w := []*relv1.FreezeWindow{weekend()}
	cases := []struct {
		name   string
		at     time.Time
		frozen bool
		until  time.Time // frozen: until; otherwise the next start
	}{
		{"wednesday", berlin(t, "2026-11-25 12:00"), false, berlin(t, "2026-11-27 18:00")},
		{"friday just before", berlin(t, "2026-11-27 17:59"), false, berlin(t, "2026-11-27 18:00")},
		{"friday at the start", berlin(t, "2026-11-27 18:00"), true, berlin(t, "2026-11-30 08:00")},
		{"saturday", berlin(t, "2026-11-28 03:00"), true, berlin(t, "2026-11-30 08:00")},
		{"monday at the end", berlin(t, "2026-11-30 08:00"), false, berlin(t, "2026-12-04 18:00")},
		// DST: Europe/Berlin goes to summer time on Sun 29 Mar 2026 02:00
		// and back on Sun 25 Oct 2026 03:00; the weekend spans both.
		{"spring forward weekend", berlin(t, "2026-03-29 12:00"), true, berlin(t, "2026-03-30 08:00")},
		{"fall back weekend", berlin(t, "2026-10-25 02:30"), true, berlin(t, "2026-10-26 08:00")},
		{"friday before spring forward", berlin(t, "2026-03-27 17:00"), false, berlin(t, "2026-03-27 18:00")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Evaluate(w, "web", "prod", c.at)
			if v.Frozen != c.frozen {
				t.Fatalf("frozen %v, want %v (%+v)", v.Frozen, c.frozen, v)
			}
			got := v.Until
			if !c.frozen {
				got = v.NextStart
			}
			if !got.Equal(c.until) {
				t.Fatalf("got %s, want %s", got, c.until)
			}
		})
	}
	// Monday 08:00 in Berlin is 06:00 UTC in summer time (UTC+2) and
	// 07:00 UTC in winter time (UTC+1): the cron is read in local time.
	if v := Evaluate(w, "web", "prod", berlin(t, "2026-03-28 12:00")); v.Until.UTC().Hour() != 6 {
		t.Fatalf("summer-time Monday 08:00 Berlin is 06:00 UTC, got %s", v.Until.UTC())
	}
	if v := Evaluate(w, "web", "prod", berlin(t, "2026-10-24 12:00")); v.Until.UTC().Hour() != 7 {
		t.Fatalf("winter-time Monday 08:00 Berlin is 07:00 UTC, got %s", v.Until.UTC())
	}
}

func TestEvaluateAbsoluteAndScope(t *testing.T) {
	bf := &relv1.FreezeWindow{Name: "black-friday", Apps: []string{"web*"}, Environments: []string{"prod", "prod-*"},
		StartUnixNano: utc(t, "2026-11-27T00:00:00Z").UnixNano(), EndUnixNano: utc(t, "2026-11-30T07:00:00Z").UnixNano(),
		TimeZone: "Europe/Berlin", Reason: "release freeze for Black Friday"}
	ext := &relv1.FreezeWindow{Name: "extension", Apps: []string{"*"}, Environments: []string{"prod"},
		StartUnixNano: utc(t, "2026-11-30T07:00:00Z").UnixNano(), EndUnixNano: utc(t, "2026-11-30T12:00:00Z").UnixNano()}
	ws := []*relv1.FreezeWindow{bf, ext}
	in := utc(t, "2026-11-28T10:00:00Z")
	cases := []struct {
		name, app, env string
		at             time.Time
		frozen         bool
		until          time.Time
		window         string
	}{
		{"covered app and env", "web", "prod", in, true, utc(t, "2026-11-30T12:00:00Z"), "black-friday"},
		{"glob env", "web-api", "prod-eu", in, true, utc(t, "2026-11-30T07:00:00Z"), "black-friday"},
		{"other app", "db", "prod-eu", in, false, time.Time{}, ""},
		{"other env", "web", "staging", in, false, time.Time{}, ""},
		{"before", "web", "prod-eu", utc(t, "2026-11-26T23:59:59Z"), false, utc(t, "2026-11-27T00:00:00Z"), "black-friday"},
		{"at the end", "web", "prod-eu", utc(t, "2026-11-30T07:00:00Z"), false, time.Time{}, ""},
		{"whole env, every-app window only", "", "prod", in, false, utc(t, "2026-11-30T07:00:00Z"), "extension"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Evaluate(ws, c.app, c.env, c.at)
			if v.Frozen != c.frozen {
				t.Fatalf("frozen %v, want %v", v.Frozen, c.frozen)
			}
			got, name := v.NextStart, v.Next.GetName()
			if c.frozen {
				got, name = v.Until, v.Window.GetName()
			}
			if !got.Equal(c.until) || name != c.window {
				t.Fatalf("got %s by %q, want %s by %q", got, name, c.until, c.window)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	bf := &relv1.FreezeWindow{Name: "black-friday", Apps: []string{"*"}, Environments: []string{"prod"},
		StartUnixNano: utc(t, "2026-11-27T00:00:00Z").UnixNano(), EndUnixNano: utc(t, "2026-11-30T07:00:00Z").UnixNano(),
		TimeZone: "Europe/Berlin", Reason: "release freeze for Black Friday"}
	ws := []*relv1.FreezeWindow{bf, weekend()}
	got := Describe(Evaluate(ws, "", "prod", utc(t, "2026-11-28T10:00:00Z")), "", "prod")
	if want := "prod is frozen until Mon 30 Nov 08:00 Europe/Berlin: release freeze for Black Friday (window black-friday)"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	got = Describe(Evaluate(ws, "", "prod", utc(t, "2026-12-01T10:00:00Z")), "", "prod")
	if want := "prod is not frozen; the next freeze starts Fri 4 Dec 18:00 Europe/Berlin (weekend freeze)"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	now := utc(t, "2026-11-27T12:00:00Z")
	abs := func(start, end string) *relv1.FreezeWindow {
		return &relv1.FreezeWindow{Name: "w", Apps: []string{"*"}, Environments: []string{"prod"},
			StartUnixNano: utc(t, start).UnixNano(), EndUnixNano: utc(t, end).UnixNano()}
	}
	rec := func(start, end, tz string) *relv1.FreezeWindow {
		return &relv1.FreezeWindow{Name: "w", Apps: []string{"*"}, Environments: []string{"prod"}, CronStart: start, CronEnd: end, TimeZone: tz}
	}
	noApps := abs("2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z")
	noApps.Apps = nil
	noEnvs := abs("2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z")
	noEnvs.Environments = nil
	cases := []struct {
		name string
		w    *relv1.FreezeWindow
		want string // "" valid; else a piece of the error
	}{
		{"absolute", abs("2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"), ""},
		{"recurring", rec("0 18 * * FRI", "0 8 * * MON", "Europe/Berlin"), ""},
		{"bad cron start", rec("0 25 * * FRI", "0 8 * * MON", "UTC"), "cron start \"0 25 * * FRI\" is not a cron expression"},
		{"bad cron end", rec("0 18 * * FRI", "every monday", "UTC"), "cron end"},
		{"six fields", rec("0 0 18 * * FRI", "0 8 * * MON", "UTC"), "cron start"},
		{"descriptor", rec("@every 1h", "0 8 * * MON", "UTC"), "five fields"},
		{"tz prefix", rec("TZ=UTC 0 18 * * FRI", "0 8 * * MON", ""), "time zone in --tz"},
		{"unknown tz", rec("0 18 * * FRI", "0 8 * * MON", "Mars/Olympus"), "time zone \"Mars/Olympus\""},
		{"end before start", abs("2026-11-29T00:00:00Z", "2026-11-28T00:00:00Z"), "is not after start"},
		{"longer than a year", abs("2026-11-28T00:00:00Z", "2028-01-01T00:00:00Z"), "longer than a year"},
		{"recurring longer than a year", rec("0 0 1 1 *", "0 0 29 2 *", "UTC"), "longer than a year"},
		{"in the past", abs("2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z"), "in the past"},
		{"no apps", noApps, "apps is empty"},
		{"no environments", noEnvs, "environments is empty"},
		{"both kinds", &relv1.FreezeWindow{Name: "w", Apps: []string{"*"}, Environments: []string{"p"}, StartUnixNano: 1, EndUnixNano: 2, CronStart: "0 0 * * *", CronEnd: "0 1 * * *"}, "not both"},
		{"no time", &relv1.FreezeWindow{Name: "w", Apps: []string{"*"}, Environments: []string{"p"}}, "no time given"},
		{"bad glob", &relv1.FreezeWindow{Name: "w", Apps: []string{"[web"}, Environments: []string{"p"}, CronStart: "0 0 * * *", CronEnd: "0 1 * * *"}, "is not a glob"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.w, now)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, c.want)
			}
		})
	}
}

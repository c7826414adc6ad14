package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/report"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// annotationFormats lists, comma-separated, the --output formats a command
// takes beside table and json (release notes: text, markdown; report:
// markdown, html).
const annotationFormats = "rel/output-formats"

const (
	formatText     = "text"
	formatMarkdown = "markdown"
	formatHTML     = "html"
)

// notesCommand is the relctl command that shows what deploying
// app@version to env changes.
func notesCommand(app, version, env string) string {
	return fmt.Sprintf("relctl release notes %s@%s --env %s", app, version, env)
}

// whatChanges is notesCommand as a line for people.
func whatChanges(app, version, env string) string {
	return "what changes: " + notesCommand(app, version, env)
}

// readChangelog reads --changelog-file: a file, or - for stdin, at most
// 64 KiB of UTF-8 (the server's limit, said here before anything is sent).
func readChangelog(path string, stdin io.Reader) (string, error) {
	if path == "" {
		return "", nil
	}
	src := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", usagef("--changelog-file %s: %v", path, err)
		}
		defer f.Close()
		src = f
	}
	b, err := io.ReadAll(io.LimitReader(src, maxNotesFile+1))
	if err != nil {
		return "", usagef("--changelog-file %s: %v", path, err)
	}
	if len(b) > maxNotesFile {
		return "", usagef("--changelog-file %s: larger than the %d KiB limit: keep the changes of this release only, or link the full log with --build-url", path, maxNotesFile>>10)
	}
	if !utf8.Valid(b) {
		return "", usagef("--changelog-file %s: not UTF-8 text", path)
	}
	return string(b), nil
}

// parseCommitTime reads --commit-time (RFC 3339).
func parseCommitTime(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, usagef("invalid --commit-time %q: want an RFC 3339 time such as 2026-11-27T10:00:00Z (git log -1 --format=%%cI prints it)", s)
	}
	if t.Year() < 1970 || t.Year() > 2200 {
		return 0, usagef("invalid --commit-time %q: give the time the commit was made, between 1970 and now", s)
	}
	return t.UnixNano(), nil
}

// parsePeriod reads report's --since: days (30d), weeks (4w) or a Go
// duration (36h).
func parsePeriod(s string) (time.Duration, error) {
	bad := usagef("invalid --since %q: want a period back from now such as 30d, 12w or 36h", s)
	if n, unit := strings.TrimRight(s, "dw"), strings.TrimLeft(s, "0123456789"); n != s && (unit == "d" || unit == "w") {
		v, err := strconv.Atoi(n)
		if err != nil || v <= 0 {
			return 0, bad
		}
		if unit == "w" {
			v *= 7
		}
		return time.Duration(v) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, bad
	}
	return d, nil
}

func (r *runner) releaseNotesCommand() *cobra.Command {
	var since, env string
	cmd := &cobra.Command{
		Use:   "notes APP@VERSION [--since VERSION | --env ENV] [-o text|markdown|json]",
		Short: "Show what a release changes: the notes, changelog, commit and labels of every release since a base",
		Long: `Show what deploying APP@VERSION changes: the notes, changelog, commit, commit
time, build link and labels of every release of APP created after a base, up
to and including VERSION, oldest first.

The base is:
  --env ENV        what ENV runs now: the version most of its healthy hosts
                   run (when they run more than one, relctl says which and how
                   many), or, with no healthy host, its last succeeded deploy
  --since VERSION  that release
  neither          nothing: every release up to VERSION

When VERSION is the base or older than it, relctl says so: deploying it
changes nothing or goes back. -o markdown writes the same for a ticket or a
chat message; -o json for scripts. The changelog comes from
'relctl release create --changelog-file'.`,
		Example: `  relctl release notes web@1.4.0 --env prod
  relctl release notes web@1.4.0 --since 1.2.0 -o markdown > changes.md
  relctl release notes web@1.4.0 --env prod -o json | jq '.releases[].version'`,
		Annotations:       map[string]string{annotationFormats: formatText + "," + formatMarkdown},
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeFirstApp,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, err := parseAppVersion(args[0])
			if err != nil {
				return err
			}
			if since != "" && env != "" {
				return usagef("give --since VERSION or --env ENV, not both: --since compares with a version, --env with what the environment runs")
			}
			req := &relv1.ReleaseNotesRequest{App: app, Version: version, Since: since, Environment: env}
			var resp *relv1.ReleaseNotesResponse
			if _, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewReportServiceClient(cc).ReleaseNotes(ctx, req, opts...)
				return err
			}); err != nil {
				return err
			}
			return r.printer().releaseNotes(req, resp)
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "compare with release `VERSION` (exclusive)")
	cmd.Flags().StringVar(&env, "env", "", "compare with what environment `ENV` runs now")
	return cmd
}

// notesBase says in words what the notes compare with.
func notesBase(req *relv1.ReleaseNotesRequest, resp *relv1.ReleaseNotesResponse) string {
	switch {
	case req.GetSince() != "":
		return resp.GetBaseVersion() + " (--since)"
	case req.GetEnvironment() != "" && resp.GetBaseVersion() == "":
		return "nothing: " + req.GetEnvironment() + " runs no release of " + req.GetApp()
	case req.GetEnvironment() != "":
		run := resp.GetRunning()
		if len(run) == 0 {
			return resp.GetBaseVersion() + ", the last release deployed to " + req.GetEnvironment() + " (no healthy host runs it now)"
		}
		if len(run) == 1 {
			return fmt.Sprintf("%s, which %s runs (%d healthy host%s)", run[0].GetVersion(), req.GetEnvironment(), run[0].GetHosts(), plural(int(run[0].GetHosts())))
		}
		parts := make([]string, len(run))
		for i, v := range run {
			parts[i] = fmt.Sprintf("%s on %d", v.GetVersion(), v.GetHosts())
		}
		return fmt.Sprintf("%s, which most of %s's hosts run (mixed: %s)", run[0].GetVersion(), req.GetEnvironment(), strings.Join(parts, ", "))
	}
	return "nothing (every release up to it)"
}

// nothingNewWords explains a candidate that is not newer than the base.
func nothingNewWords(req *relv1.ReleaseNotesRequest, resp *relv1.ReleaseNotesResponse) string {
	c := resp.GetCandidate()
	if c.GetVersion() == resp.GetBaseVersion() {
		return fmt.Sprintf("%s@%s is the base, %s: nothing changes.", c.GetApp(), c.GetVersion(), notesBase(req, resp))
	}
	return fmt.Sprintf("%s@%s is older than the base, %s: deploying it goes back, and no release in between is new.", c.GetApp(), c.GetVersion(), notesBase(req, resp))
}

type releaseNotesJSON struct {
	App         string             `json:"app"`
	Version     string             `json:"version"`
	BaseVersion string             `json:"base_version"`
	Environment string             `json:"environment,omitempty"`
	Running     []versionHostsJSON `json:"running,omitempty"`
	Mixed       bool               `json:"mixed"`
	NothingNew  bool               `json:"nothing_new"`
	Releases    []releaseJSON      `json:"releases"`
}

type versionHostsJSON struct {
	Version string `json:"version"`
	Hosts   uint32 `json:"hosts"`
}

func (p printer) releaseNotes(req *relv1.ReleaseNotesRequest, resp *relv1.ReleaseNotesResponse) error {
	c := resp.GetCandidate()
	switch p.format {
	case formatJSON:
		out := releaseNotesJSON{App: c.GetApp(), Version: c.GetVersion(), BaseVersion: resp.GetBaseVersion(), Environment: req.GetEnvironment(),
			Mixed: len(resp.GetRunning()) > 1, NothingNew: resp.GetNothingNew(), Releases: []releaseJSON{}}
		for _, v := range resp.GetRunning() {
			out.Running = append(out.Running, versionHostsJSON{v.GetVersion(), v.GetHosts()})
		}
		for _, rel := range resp.GetReleases() {
			out.Releases = append(out.Releases, toReleaseJSON(rel))
		}
		return p.writeJSON(out)
	case formatMarkdown:
		return p.releaseNotesMarkdown(req, resp)
	}
	var b strings.Builder
	if resp.GetNothingNew() {
		b.WriteString(nothingNewWords(req, resp) + "\n")
		_, err := io.WriteString(p.w, b.String())
		return err
	}
	fmt.Fprintf(&b, "What %s@%s changes, compared with %s\n", c.GetApp(), c.GetVersion(), notesBase(req, resp))
	vs := make([]string, len(resp.GetReleases()))
	for i, rel := range resp.GetReleases() {
		vs[i] = rel.GetVersion()
	}
	fmt.Fprintf(&b, "%d release%s: %s\n", len(vs), plural(len(vs)), strings.Join(vs, ", "))
	for _, rel := range resp.GetReleases() {
		fmt.Fprintf(&b, "\n== %s %s  created %s\n", cell(rel.GetApp()), cell(rel.GetVersion()), formatTime(rel.GetCreatedUnixNano(), time.RFC3339))
		if rel.GetCommit() != "" || rel.GetCommitUnixNano() != 0 {
			fmt.Fprintf(&b, "   %s\n", strings.TrimSpace("commit "+cell(rel.GetCommit())+" "+formatTime(rel.GetCommitUnixNano(), time.RFC3339)))
		}
		if rel.GetBuildUrl() != "" {
			fmt.Fprintf(&b, "   build  %s\n", cell(rel.GetBuildUrl()))
		}
		if len(rel.GetLabels()) > 0 {
			fmt.Fprintf(&b, "   labels %s\n", cell(formatMap(rel.GetLabels())))
		}
		writeNotesBlock(&b, "Notes", rel.GetNotes())
		writeNotesBlock(&b, "Changelog", rel.GetChangelog())
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

func writeNotesBlock(b *strings.Builder, title, body string) {
	body = strings.TrimRight(text(body), " \t\r\n")
	if body == "" {
		return
	}
	b.WriteString("   " + title + ":\n")
	for _, line := range strings.Split(body, "\n") {
		b.WriteString(strings.TrimRight("     "+line, " \t") + "\n")
	}
}

func (p printer) releaseNotesMarkdown(req *relv1.ReleaseNotesRequest, resp *relv1.ReleaseNotesResponse) error {
	c := resp.GetCandidate()
	var b strings.Builder
	target := ""
	if req.GetEnvironment() != "" {
		target = " in " + req.GetEnvironment()
	}
	fmt.Fprintf(&b, "# What %s %s changes%s\n\n", c.GetApp(), c.GetVersion(), target)
	if resp.GetNothingNew() {
		b.WriteString(nothingNewWords(req, resp) + "\n")
		_, err := io.WriteString(p.w, b.String())
		return err
	}
	fmt.Fprintf(&b, "Compared with %s.\n", notesBase(req, resp))
	for _, rel := range resp.GetReleases() {
		fmt.Fprintf(&b, "\n## %s\n\n", rel.GetVersion())
		var meta []string
		meta = append(meta, "created "+formatTime(rel.GetCreatedUnixNano(), time.RFC3339))
		if rel.GetCommit() != "" {
			meta = append(meta, "commit `"+rel.GetCommit()+"`")
		}
		if rel.GetCommitUnixNano() != 0 {
			meta = append(meta, "committed "+formatTime(rel.GetCommitUnixNano(), time.RFC3339))
		}
		if rel.GetBuildUrl() != "" {
			meta = append(meta, "[build]("+rel.GetBuildUrl()+")")
		}
		if len(rel.GetLabels()) > 0 {
			meta = append(meta, "labels `"+formatMap(rel.GetLabels())+"`")
		}
		b.WriteString("*" + strings.Join(meta, " · ") + "*\n")
		if n := strings.TrimSpace(text(rel.GetNotes())); n != "" {
			b.WriteString("\n" + n + "\n")
		}
		if cl := strings.TrimSpace(text(rel.GetChangelog())); cl != "" {
			b.WriteString("\n### Changelog\n\n" + cl + "\n")
		}
	}
	_, err := io.WriteString(p.w, b.String())
	return err
}

func (r *runner) reportCommand() *cobra.Command {
	var app, env, since string
	cmd := &cobra.Command{
		Use:   "report [--app APP] [--env ENV] [--since 30d] [-o table|json|markdown|html]",
		Short: "Management report: DORA figures per app and environment, outcomes, approval waits, what runs where",
		Long: `Report on release performance over a period ending now (the answering
server's clock), per app and environment, with the four DORA figures:

  deploy frequency      deploys that succeeded, per day (or per week)
  lead time             median from a release's commit time (--commit-time at
                        release create) or else its creation, to its deploy
                        succeeding in the environment
  change failure rate   deploys failed or rolled back over all deploys with a
                        verdict (aborted ones count when they had started; one
                        that dispatched no host, e.g. its approval expired,
                        counts for nothing; a rollback is not a deploy)
  time to restore       median from a failure (a failed deploy's end, or a
                        rolled back one's rollback request) to the next
                        success in the environment; failures not restored
                        yet are counted apart

Each has its DORA performance band (elite, high, medium, low: the thresholds
of the 2023 Accelerate State of DevOps report) and its trend against the
period before, of the same length. Then rollouts by outcome, approval waits
(median and p90, from awaiting approval to approved), and what runs where
(healthy hosts by version, from the agents' reports).

The figures come from the servers' deployment records, one per finished
rollout, kept for --deployment-retention (400 days) while rollouts
themselves are removed after days. --since takes 1h to 200d.

-o html writes one self-contained page (inline CSS and SVG charts, no
script) for people who do not read tables.`,
		Example: `  relctl report
  relctl report --env prod --since 90d -o markdown
  relctl report --since 30d -o html > report.html`,
		Annotations: map[string]string{annotationFormats: formatMarkdown + "," + formatHTML},
		Args:        noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			period := report.DefaultPeriod
			if since != "" {
				var err error
				if period, err = parsePeriod(since); err != nil {
					return err
				}
			}
			req := &relv1.ReportRequest{App: app, Environment: env, PeriodNanos: int64(period)}
			var resp *relv1.ReportResponse
			if _, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewReportServiceClient(cc).Report(ctx, req, opts...)
				return err
			}); err != nil {
				return err
			}
			rep := report.FromResponse(resp)
			p := r.printer()
			switch p.format {
			case formatJSON:
				return p.writeJSON(rep)
			case formatMarkdown:
				return report.RenderMarkdown(p.w, rep)
			case formatHTML:
				return report.RenderHTML(p.w, rep)
			}
			return report.RenderText(p.w, rep)
		}),
	}
	cmd.Flags().StringVar(&app, "app", "", "only `APP`")
	cmd.Flags().StringVar(&env, "env", "", "only environment `ENV`")
	cmd.Flags().StringVar(&since, "since", "30d", "the `PERIOD` back from now: 30d, 12w, 36h")
	return cmd
}

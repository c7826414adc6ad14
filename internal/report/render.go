package report

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Words and figures for people, shared by every rendering.

// FormatFrequency says how often: per day from once a day, else per week.
func FormatFrequency(perDay float64) string {
	switch {
	case perDay == 0:
		return "none"
	case perDay >= 1:
		return trimFloat(perDay) + "/day"
	}
	return trimFloat(perDay*7) + "/week"
}

// FormatDuration writes a duration the way people say it: 45s, 12m,
// 3h20m, 2.5d.
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Round(time.Minute).Minutes()))
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		h, m := int(d.Hours()), int(d.Minutes())%60
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	return trimFloat(d.Hours()/24) + "d"
}

// FormatPercent writes a rate (0..1) as a percentage.
func FormatPercent(r float64) string { return trimFloat(r*100) + "%" }

func trimFloat(f float64) string {
	if f >= 10 || f == math.Trunc(f) {
		return fmt.Sprintf("%.0f", math.Round(f))
	}
	s := fmt.Sprintf("%.2f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// cell is one metric's text: value, band and trend.
func (m Metric) cell(format func(float64) string) string {
	if !m.Known {
		if m.PreviousKnown {
			return "n/a (before: " + format(m.Previous) + ")"
		}
		return "n/a"
	}
	s := format(m.Value) + " " + string(m.Band)
	if m.Trend != TrendNone {
		s += ", " + string(m.Trend) + " than " + format(m.Previous)
	}
	return s
}

func fmtFreq(v float64) string { return FormatFrequency(v) }
func fmtDur(v float64) string  { return FormatDuration(seconds(v)) }
func fmtPct(v float64) string  { return FormatPercent(v) }

// Title names the period.
func (r Report) Title() string {
	return fmt.Sprintf("Release report: the %s from %s to %s", periodWords(r.Period),
		r.From.UTC().Format("2006-01-02 15:04"), r.Now.UTC().Format("2006-01-02 15:04 MST"))
}

func periodWords(p time.Duration) string {
	if p%(24*time.Hour) == 0 {
		n := int(p / (24 * time.Hour))
		if n == 1 {
			return "day"
		}
		return fmt.Sprintf("%d days", n)
	}
	return FormatDuration(p)
}

// RenderText writes the report as aligned plain-text tables.
func RenderText(w io.Writer, r Report) error {
	var b strings.Builder
	b.WriteString(r.Title() + "\n")
	fmt.Fprintf(&b, "trends compare with the %s before; bands are DORA's (elite, high, medium, low)\n\n", periodWords(r.Period))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	if len(r.Rows) == 0 {
		b.WriteString("No rollout finished in this period or the one before.\n")
	} else {
		fmt.Fprintln(tw, "APP\tENVIRONMENT\tDEPLOY FREQUENCY\tLEAD TIME\tCHANGE FAILURE RATE\tTIME TO RESTORE")
		for _, row := range r.Rows {
			restore := row.TimeToRestore.cell(fmtDur)
			if row.Unrestored > 0 {
				restore += fmt.Sprintf(" (%d not restored since %s)", row.Unrestored, row.UnrestoredSince.UTC().Format("2006-01-02 15:04"))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", row.App, row.Environment,
				row.DeploymentFrequency.cell(fmtFreq), row.LeadTime.cell(fmtDur),
				row.ChangeFailureRate.cell(fmtPct)+fmt.Sprintf(" (%d of %d)", row.Failures, row.ChangeFailureRate.Samples), restore)
		}
		tw.Flush()
	}
	b.WriteString("\nRollouts by outcome\n")
	if len(r.Outcomes) == 0 {
		b.WriteString("  none\n")
	}
	for _, o := range r.Outcomes {
		fmt.Fprintf(&b, "  %-10s %-12s %d\n", o.Kind, o.Outcome, o.Count)
	}
	b.WriteString("\nApproval waits\n")
	if r.Approvals.Count == 0 {
		b.WriteString("  no rollout of this period waited for approval\n")
	} else {
		fmt.Fprintf(&b, "  %d approved: median %s, p90 %s\n", r.Approvals.Count, FormatDuration(r.Approvals.Median), FormatDuration(r.Approvals.P90))
	}
	b.WriteString("\nWhat runs where (healthy hosts by version)\n")
	writeMatrix(&b, r, func(s string) string { return s }, false)
	_, err := io.WriteString(w, b.String())
	return err
}

// RenderMarkdown writes the report as Markdown tables.
func RenderMarkdown(w io.Writer, r Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\nTrends compare with the %s before; bands are DORA's (elite, high, medium, low).\n\n", r.Title(), periodWords(r.Period))
	if len(r.Rows) == 0 {
		b.WriteString("No rollout finished in this period or the one before.\n")
	} else {
		b.WriteString("| App | Environment | Deploy frequency | Lead time | Change failure rate | Time to restore |\n|---|---|---|---|---|---|\n")
		for _, row := range r.Rows {
			restore := row.TimeToRestore.cell(fmtDur)
			if row.Unrestored > 0 {
				restore += fmt.Sprintf(" (%d not restored since %s)", row.Unrestored, row.UnrestoredSince.UTC().Format("2006-01-02 15:04"))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", mdEscape(row.App), mdEscape(row.Environment),
				row.DeploymentFrequency.cell(fmtFreq), row.LeadTime.cell(fmtDur),
				row.ChangeFailureRate.cell(fmtPct)+fmt.Sprintf(" (%d of %d)", row.Failures, row.ChangeFailureRate.Samples), restore)
		}
	}
	b.WriteString("\n## Rollouts by outcome\n\n")
	if len(r.Outcomes) == 0 {
		b.WriteString("None.\n")
	} else {
		b.WriteString("| Kind | Outcome | Rollouts |\n|---|---|---|\n")
		for _, o := range r.Outcomes {
			fmt.Fprintf(&b, "| %s | %s | %d |\n", o.Kind, o.Outcome, o.Count)
		}
	}
	b.WriteString("\n## Approval waits\n\n")
	if r.Approvals.Count == 0 {
		b.WriteString("No rollout of this period waited for approval.\n")
	} else {
		fmt.Fprintf(&b, "%d approved: median %s, p90 %s.\n", r.Approvals.Count, FormatDuration(r.Approvals.Median), FormatDuration(r.Approvals.P90))
	}
	b.WriteString("\n## What runs where\n\nHealthy hosts by version.\n\n")
	writeMatrix(&b, r, mdEscape, true)
	_, err := io.WriteString(w, b.String())
	return err
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Matrix is what runs where as an app × environment grid.
type Matrix struct {
	Apps         []string
	Environments []string
	// Cells[i][j] is app i in environment j; nil when nothing is there.
	Cells [][]*RunningCell
}

// Matrix arranges the running cells by app and environment.
func (r Report) Matrix() Matrix {
	var m Matrix
	apps, envs := map[string]bool{}, map[string]bool{}
	for _, c := range r.Running {
		if !apps[c.App] {
			apps[c.App] = true
			m.Apps = append(m.Apps, c.App)
		}
		if !envs[c.Environment] {
			envs[c.Environment] = true
			m.Environments = append(m.Environments, c.Environment)
		}
	}
	sort.Strings(m.Apps)
	sort.Strings(m.Environments)
	m.Cells = make([][]*RunningCell, len(m.Apps))
	for i, a := range m.Apps {
		m.Cells[i] = make([]*RunningCell, len(m.Environments))
		for j, e := range m.Environments {
			for k := range r.Running {
				if c := &r.Running[k]; c.App == a && c.Environment == e {
					m.Cells[i][j] = c
				}
			}
		}
	}
	return m
}

// Text says in one line what runs in a cell: "1.2.3 3/3", or the versions
// when hosts differ.
func (c RunningCell) Text() string {
	healthy := 0
	for _, v := range c.Running {
		healthy += v.Hosts
	}
	switch len(c.Running) {
	case 0:
		if c.CurrentVersion != "" {
			return fmt.Sprintf("%s 0/%d healthy", c.CurrentVersion, c.Hosts)
		}
		return fmt.Sprintf("nothing (%d hosts)", c.Hosts)
	case 1:
		return fmt.Sprintf("%s %d/%d", c.Running[0].Version, c.Running[0].Hosts, c.Hosts)
	}
	parts := make([]string, len(c.Running))
	for i, v := range c.Running {
		parts[i] = fmt.Sprintf("%s×%d", v.Version, v.Hosts)
	}
	return fmt.Sprintf("mixed %s of %d", strings.Join(parts, " "), c.Hosts)
}

func writeMatrix(b *strings.Builder, r Report, esc func(string) string, markdown bool) {
	m := r.Matrix()
	if len(m.Apps) == 0 {
		if markdown {
			b.WriteString("No hosts.\n")
		} else {
			b.WriteString("  no hosts\n")
		}
		return
	}
	if markdown {
		b.WriteString("| App |")
		for _, e := range m.Environments {
			b.WriteString(" " + esc(e) + " |")
		}
		b.WriteString("\n|---|" + strings.Repeat("---|", len(m.Environments)) + "\n")
		for i, a := range m.Apps {
			b.WriteString("| " + esc(a) + " |")
			for j := range m.Environments {
				t := "-"
				if c := m.Cells[i][j]; c != nil {
					t = esc(c.Text())
				}
				b.WriteString(" " + t + " |")
			}
			b.WriteString("\n")
		}
		return
	}
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "  APP")
	for _, e := range m.Environments {
		fmt.Fprint(tw, "\t"+strings.ToUpper(e))
	}
	fmt.Fprintln(tw)
	for i, a := range m.Apps {
		fmt.Fprint(tw, "  "+a)
		for j := range m.Environments {
			t := "-"
			if c := m.Cells[i][j]; c != nil {
				t = c.Text()
			}
			fmt.Fprint(tw, "\t"+t)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

package report

import (
	"fmt"
	"html/template"
	"io"
	"strings"
)

// RenderHTML writes the report as one self-contained HTML page: inline CSS
// and SVG charts drawn here, no script, no external resource, so it can be
// mailed, archived or served by the web dashboard as it is.
func RenderHTML(w io.Writer, r Report) error {
	return pageTemplate.Execute(w, newHTMLView(r))
}

// RenderHTMLFragment writes the same report as one element, its styles
// scoped to it, for a page of its own (the web dashboard's report page).
func RenderHTMLFragment(w io.Writer, r Report) error {
	return fragmentTemplate.Execute(w, newHTMLView(r))
}

// bandColor is each band's colour, also used in the legend.
var bandColor = map[Band]string{Elite: "#1b7f3b", High: "#5aa02c", Medium: "#d99a00", Low: "#c4302b", "": "#8a8f98"}

// The HTML view: every figure already worded and every chart already laid
// out, so the template only places them.
type htmlView struct {
	Title, Subtitle string
	Rows            []htmlRow
	Chart           htmlChart
	Outcomes        htmlOutcomes
	Approvals       string
	ApprovalBars    []htmlHBar
	Matrix          Matrix
	Bands           []htmlLegend
}

type htmlLegend struct{ Name, Color string }

type htmlRow struct {
	App, Environment string
	Tiles            []htmlTile
	Note             string
}

type htmlTile struct {
	Name, Value, Band, Color, Trend, Arrow, Previous, Explain string
}

type htmlChart struct {
	Width, Height int
	Bars          []htmlBar
	Labels        []htmlLabel
	Max           int
	Empty         bool
}

type htmlBar struct {
	X, Y, W, H int
	Color      string
	Title      string
}

type htmlLabel struct {
	X, Y int
	Text string
}

type htmlOutcomes struct {
	Segments []htmlBar
	Legend   []htmlLegend
	Total    int
}

type htmlHBar struct {
	Label, Value string
	W            int
}

func newHTMLView(r Report) htmlView {
	v := htmlView{Title: r.Title(), Subtitle: fmt.Sprintf("Each figure's colour is its DORA performance band; the arrow compares it with the %s before.", periodWords(r.Period)), Matrix: r.Matrix()}
	for _, b := range []Band{Elite, High, Medium, Low} {
		v.Bands = append(v.Bands, htmlLegend{Name: string(b), Color: bandColor[b]})
	}
	for _, row := range r.Rows {
		hr := htmlRow{App: row.App, Environment: row.Environment}
		hr.Tiles = []htmlTile{
			tile("Deploys", row.DeploymentFrequency, fmtFreq, fmt.Sprintf("%d deploys succeeded", row.Deploys)),
			tile("Lead time", row.LeadTime, fmtDur, "median, commit to running here"),
			tile("Change failures", row.ChangeFailureRate, fmtPct, fmt.Sprintf("%d of %d deploys failed or were rolled back", row.Failures, row.ChangeFailureRate.Samples)),
			tile("Time to restore", row.TimeToRestore, fmtDur, "median, failure to next success"),
		}
		if row.Unrestored > 0 {
			hr.Note = fmt.Sprintf("%d failure(s) not restored yet, the oldest since %s.", row.Unrestored, row.UnrestoredSince.UTC().Format("2006-01-02 15:04 MST"))
		}
		v.Rows = append(v.Rows, hr)
	}
	v.Chart = chart(r)
	v.Outcomes = outcomeBar(r.Outcomes)
	if r.Approvals.Count == 0 {
		v.Approvals = "No rollout of this period waited for approval."
	} else {
		was := "rollouts were"
		if r.Approvals.Count == 1 {
			was = "rollout was"
		}
		v.Approvals = fmt.Sprintf("%d %s approved. Half waited %s or less; nine in ten %s or less.", r.Approvals.Count, was, FormatDuration(r.Approvals.Median), FormatDuration(r.Approvals.P90))
		longest := max(r.Approvals.P90, 1)
		v.ApprovalBars = []htmlHBar{
			{Label: "median", Value: FormatDuration(r.Approvals.Median), W: int(300 * r.Approvals.Median / longest)},
			{Label: "p90", Value: FormatDuration(r.Approvals.P90), W: 300},
		}
	}
	return v
}

func tile(name string, m Metric, format func(float64) string, explain string) htmlTile {
	t := htmlTile{Name: name, Explain: explain, Color: bandColor[""]}
	if !m.Known {
		t.Value, t.Band = "n/a", "nothing to measure"
	} else {
		t.Value, t.Band, t.Color = format(m.Value), string(m.Band), bandColor[m.Band]
	}
	switch m.Trend {
	case TrendBetter:
		t.Arrow, t.Trend = "▲", "better"
	case TrendWorse:
		t.Arrow, t.Trend = "▼", "worse"
	case TrendSame:
		t.Arrow, t.Trend = "●", "same"
	}
	if m.PreviousKnown {
		t.Previous = "before: " + format(m.Previous)
	} else {
		t.Previous = "before: n/a"
	}
	return t
}

// chart lays out the deploys-per-bucket bar chart: succeeded stacked under
// failed, one bar per day or week.
func chart(r Report) htmlChart {
	c := htmlChart{Width: 720, Height: 200}
	const left, bottom, top = 30, 24, 10
	for _, b := range r.Buckets {
		c.Max = max(c.Max, b.Succeeded+b.Failed)
	}
	if len(r.Buckets) == 0 || c.Max == 0 {
		c.Empty = true
		return c
	}
	plotH := c.Height - bottom - top
	step := (c.Width - left) / len(r.Buckets)
	bw := max(2, step*7/10)
	scale := func(n int) int { return n * plotH / c.Max }
	unit := "day"
	if len(r.Buckets) > 0 && r.Buckets[0].Width > 24*3600e9 {
		unit = "week of"
	}
	for i, b := range r.Buckets {
		x := left + i*step
		base := c.Height - bottom
		if b.Succeeded > 0 {
			h := scale(b.Succeeded)
			c.Bars = append(c.Bars, htmlBar{X: x, Y: base - h, W: bw, H: h, Color: bandColor[Elite],
				Title: fmt.Sprintf("%s %s: %d succeeded", unit, b.Start.UTC().Format("Jan 2"), b.Succeeded)})
			base -= h
		}
		if b.Failed > 0 {
			h := scale(b.Failed)
			c.Bars = append(c.Bars, htmlBar{X: x, Y: base - h, W: bw, H: h, Color: bandColor[Low],
				Title: fmt.Sprintf("%s %s: %d failed or rolled back", unit, b.Start.UTC().Format("Jan 2"), b.Failed)})
		}
		if every := max(1, len(r.Buckets)/8); i%every == 0 {
			c.Labels = append(c.Labels, htmlLabel{X: x, Y: c.Height - 6, Text: b.Start.UTC().Format("Jan 2")})
		}
	}
	c.Labels = append(c.Labels, htmlLabel{X: 0, Y: top + 10, Text: fmt.Sprint(c.Max)}, htmlLabel{X: 0, Y: c.Height - bottom, Text: "0"})
	return c
}

var outcomeColor = map[string]string{outcomeSucceeded: "#1b7f3b", outcomeFailed: "#c4302b", outcomeRolledBack: "#e07b00", outcomeAborted: "#8a8f98"}

func outcomeBar(os []OutcomeCount) htmlOutcomes {
	var o htmlOutcomes
	by := map[string]int{}
	var names []string
	for _, c := range os {
		if by[c.Outcome] == 0 {
			names = append(names, c.Outcome)
		}
		by[c.Outcome] += c.Count
		o.Total += c.Count
	}
	if o.Total == 0 {
		return o
	}
	x := 0
	for _, n := range names {
		w := by[n] * 700 / o.Total
		col := outcomeColor[n]
		if col == "" {
			col = "#4a6fa5"
		}
		o.Segments = append(o.Segments, htmlBar{X: x, Y: 0, W: w, H: 28, Color: col, Title: fmt.Sprintf("%s: %d", n, by[n])})
		o.Legend = append(o.Legend, htmlLegend{Name: fmt.Sprintf("%s %d", strings.ReplaceAll(n, "_", " "), by[n]), Color: col})
		x += w
	}
	return o
}

// reportCSS styles the page; fragmentCSS is the same scoped to the
// fragment's .rel-report element, so it does not restyle the page around it.
const reportCSS = `body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1000px; padding: 0 1rem; color: #1d2430; background: #fafbfc; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin-top: 2.2rem; border-bottom: 1px solid #dde1e6; padding-bottom: .3rem; }
h3 { font-size: 1rem; margin: 1.4rem 0 .5rem; }
.sub { color: #5b6472; margin-top: 0; }
.legend span { display: inline-block; margin-right: 1rem; font-size: .9rem; }
.legend i { display: inline-block; width: .9rem; height: .9rem; border-radius: 2px; margin-right: .3rem; vertical-align: -2px; }
.tiles { display: grid; grid-template-columns: repeat(4, 1fr); gap: .7rem; }
.tile { background: #fff; border: 1px solid #dde1e6; border-left: 6px solid; border-radius: 6px; padding: .6rem .8rem; }
.tile .name { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: #5b6472; }
.tile .value { font-size: 1.6rem; font-weight: 600; }
.tile .band { font-weight: 600; text-transform: capitalize; }
.tile .small { font-size: .8rem; color: #5b6472; }
.better { color: #1b7f3b; } .worse { color: #c4302b; } .same { color: #5b6472; }
.note { color: #c4302b; font-weight: 600; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #dde1e6; padding: .4rem .7rem; text-align: left; }
th { background: #f0f2f5; }
td.ok { background: #e8f5ec; } td.mixed { background: #fff4d6; } td.none { color: #8a8f98; }
svg text { font-size: 11px; fill: #5b6472; }
`

var fragmentCSS = scopeCSS(reportCSS, ".rel-report")

// scopeCSS prefixes every selector of css (one rule per line) with scope;
// body becomes scope itself.
func scopeCSS(css, scope string) string {
	var b strings.Builder
	for _, line := range strings.Split(css, "\n") {
		for _, rule := range strings.SplitAfter(line, "}") {
			sel, decl, ok := strings.Cut(rule, "{")
			if !ok {
				b.WriteString(rule)
				continue
			}
			var sels []string
			for _, one := range strings.Split(sel, ",") {
				one = strings.TrimSpace(one)
				if one == "body" {
					sels = append(sels, scope)
				} else {
					sels = append(sels, scope+" "+one)
				}
			}
			b.WriteString(strings.Join(sels, ", ") + " {" + decl)
		}
		b.WriteString("\n")
	}
	return b.String()
}

const reportBody = `<h1>{{.Title}}</h1>
<p class="sub">{{.Subtitle}}</p>
<p class="legend">{{range .Bands}}<span><i style="background:{{.Color}}"></i>{{.Name}}</span>{{end}}</p>

<h2>Delivery performance by app and environment</h2>
{{if not .Rows}}<p>No rollout finished in this period or the one before.</p>{{end}}
{{range .Rows}}
<h3>{{.App}} in {{.Environment}}</h3>
<div class="tiles">
{{range .Tiles}}<div class="tile" style="border-left-color:{{.Color}}">
<div class="name">{{.Name}}</div>
<div class="value">{{.Value}}</div>
<div class="band" style="color:{{.Color}}">{{.Band}}</div>
<div class="small">{{if .Arrow}}<span class="{{.Trend}}">{{.Arrow}} {{.Trend}}</span>, {{end}}{{.Previous}}</div>
<div class="small">{{.Explain}}</div>
</div>{{end}}
</div>
{{if .Note}}<p class="note">{{.Note}}</p>{{end}}
{{end}}

<h2>Deploys over the period</h2>
{{if .Chart.Empty}}<p>No deploy succeeded or failed in this period.</p>{{else}}
<svg width="{{.Chart.Width}}" height="{{.Chart.Height}}" viewBox="0 0 {{.Chart.Width}} {{.Chart.Height}}" role="img" aria-label="deploys per day or week: green succeeded, red failed or rolled back">
<line x1="28" y1="{{.Chart.Height}}" x2="{{.Chart.Width}}" y2="{{.Chart.Height}}" stroke="#dde1e6"/>
{{range .Chart.Bars}}<rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" fill="{{.Color}}"><title>{{.Title}}</title></rect>
{{end}}{{range .Chart.Labels}}<text x="{{.X}}" y="{{.Y}}">{{.Text}}</text>
{{end}}</svg>
<p class="legend"><span><i style="background:#1b7f3b"></i>succeeded</span><span><i style="background:#c4302b"></i>failed or rolled back</span></p>
{{end}}

<h2>Rollouts by outcome</h2>
{{if eq .Outcomes.Total 0}}<p>No rollout finished in this period.</p>{{else}}
<svg width="700" height="28" viewBox="0 0 700 28" role="img" aria-label="rollouts by outcome">
{{range .Outcomes.Segments}}<rect x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" fill="{{.Color}}"><title>{{.Title}}</title></rect>
{{end}}</svg>
<p class="legend">{{range .Outcomes.Legend}}<span><i style="background:{{.Color}}"></i>{{.Name}}</span>{{end}}</p>
{{end}}

<h2>Waiting for approval</h2>
<p>{{.Approvals}}</p>
{{if .ApprovalBars}}<svg width="460" height="60" viewBox="0 0 460 60" role="img" aria-label="approval waits">
{{range $i, $b := .ApprovalBars}}<text x="0" y="{{if eq $i 0}}18{{else}}46{{end}}">{{$b.Label}}</text><rect x="60" y="{{if eq $i 0}}6{{else}}34{{end}}" width="{{$b.W}}" height="18" fill="#4a6fa5"/><text x="{{$b.W}}" dx="66" y="{{if eq $i 0}}18{{else}}46{{end}}">{{$b.Value}}</text>
{{end}}</svg>{{end}}

<h2>What runs where</h2>
{{if not .Matrix.Apps}}<p>No hosts.</p>{{else}}
<table>
<tr><th>App</th>{{range .Matrix.Environments}}<th>{{.}}</th>{{end}}</tr>
{{range $i, $app := .Matrix.Apps}}<tr><th>{{$app}}</th>{{range index $.Matrix.Cells $i}}{{if not .}}<td class="none">-</td>{{else if .Mixed}}<td class="mixed">{{.Text}}</td>{{else}}<td class="ok">{{.Text}}</td>{{end}}{{end}}</tr>
{{end}}</table>
<p class="legend"><span><i style="background:#e8f5ec"></i>one version</span><span><i style="background:#fff4d6"></i>mixed versions</span></p>
{{end}}
`

var pageTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
` + reportCSS + `</style>
</head>
<body>
` + reportBody + `</body>
</html>
`))

var fragmentTemplate = template.Must(template.New("fragment").Parse(`<div class="rel-report">
<style>
` + fragmentCSS + `</style>
` + reportBody + `</div>
`))

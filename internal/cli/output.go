package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

const (
	formatTable = "table"
	formatJSON  = "json"
)

// The JSON shapes below are relctl's scripting interface. They are spelled
// out field by field instead of marshalling the proto messages so that a
// proto change (a renamed field, a new internal one) cannot silently change
// what scripts parse.

type appJSON struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Lifecycle   string `json:"lifecycle,omitempty"`
	CreatedAt   string `json:"created_at"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

type environmentJSON struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Selector    map[string]string `json:"selector"`
	CreatedAt   string            `json:"created_at"`
	CreateIndex uint64            `json:"create_index"`
	ModifyIndex uint64            `json:"modify_index"`
	// Change control: the approvals its rollouts need (absent: none).
	ApprovalPolicy        *approvalPolicyJSON `json:"approval_policy,omitempty"`
	ApprovalPolicyVersion uint64              `json:"approval_policy_version,omitempty"`
	// What release promote rolls out with (absent: rollout start's defaults).
	DefaultSpec *specJSON `json:"default_spec,omitempty"`
}

type releaseJSON struct {
	App         string            `json:"app"`
	Version     string            `json:"version"`
	ArtifactURL string            `json:"artifact_url"`
	SHA256      string            `json:"sha256"`
	Size        int64             `json:"size"`
	Notes       string            `json:"notes"`
	Commit      string            `json:"commit"`
	Labels      map[string]string `json:"labels"`
	Blocked     bool              `json:"blocked,omitempty"`
	BlockReason string            `json:"block_reason,omitempty"`
	BlockedBy   string            `json:"blocked_by,omitempty"`
	CreatedAt   string            `json:"created_at"`
	CreateIndex uint64            `json:"create_index"`
	ModifyIndex uint64            `json:"modify_index"`
	// Release notes (relctl release notes).
	Changelog  string `json:"changelog,omitempty"`
	BuildURL   string `json:"build_url,omitempty"`
	CommitTime string `json:"commit_time,omitempty"`
}

type memberJSON struct {
	ID           string `json:"id"`
	Role         string `json:"role"`
	Leader       bool   `json:"leader"`
	Suffrage     string `json:"suffrage"`
	RaftAddr     string `json:"raft_addr"`
	GRPCAddr     string `json:"grpc_addr"`
	HTTPAddr     string `json:"http_addr"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	Error        string `json:"error"`
}

type removedJSON struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
}

type serverVersionJSON struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	Address string `json:"address"`
}

type versionJSON struct {
	ClientVersion string             `json:"client_version"`
	Server        *serverVersionJSON `json:"server"`
	ServerError   string             `json:"server_error,omitempty"`
}

func toAppJSON(a *relv1.App) appJSON {
	return appJSON{
		Name:        a.GetName(),
		Description: a.GetDescription(),
		Lifecycle:   a.GetLifecycle(),
		CreatedAt:   formatTime(a.GetCreatedUnixNano(), time.RFC3339Nano),
		CreateIndex: a.GetCreateIndex(),
		ModifyIndex: a.GetModifyIndex(),
	}
}

func toEnvironmentJSON(e *relv1.Environment) environmentJSON {
	return environmentJSON{
		Name:        e.GetName(),
		Description: e.GetDescription(),
		Selector:    nonNil(e.GetSelector()),
		CreatedAt:   formatTime(e.GetCreatedUnixNano(), time.RFC3339Nano),
		CreateIndex: e.GetCreateIndex(),
		ModifyIndex: e.GetModifyIndex(),

		ApprovalPolicy:        toPolicyJSON(e.GetApprovalPolicy()),
		ApprovalPolicyVersion: e.GetApprovalPolicyVersion(),
		DefaultSpec:           defaultSpecJSON(e.GetDefaultSpec()),
	}
}

func defaultSpecJSON(s *relv1.RolloutSpec) *specJSON {
	if s == nil {
		return nil
	}
	j := toSpecJSON(s)
	return &j
}

func toReleaseJSON(r *relv1.Release) releaseJSON {
	return releaseJSON{
		App:         r.GetApp(),
		Version:     r.GetVersion(),
		ArtifactURL: r.GetArtifactUrl(),
		SHA256:      r.GetSha256(),
		Size:        r.GetSize(),
		Notes:       r.GetNotes(),
		Commit:      r.GetCommit(),
		Labels:      nonNil(r.GetLabels()),
		Blocked:     r.GetBlocked(),
		BlockReason: r.GetBlockReason(),
		BlockedBy:   actorWords(r.GetBlockedBy()),
		CreatedAt:   formatTime(r.GetCreatedUnixNano(), time.RFC3339Nano),
		CreateIndex: r.GetCreateIndex(),
		ModifyIndex: r.GetModifyIndex(),
		Changelog:   r.GetChangelog(),
		BuildURL:    r.GetBuildUrl(),
		CommitTime:  formatTime(r.GetCommitUnixNano(), time.RFC3339),
	}
}

func toMemberJSON(m *relv1.Member) memberJSON {
	return memberJSON{
		ID:           m.GetId(),
		Role:         m.GetRole(),
		Leader:       m.GetLeader(),
		Suffrage:     m.GetSuffrage(),
		RaftAddr:     m.GetRaftAddr(),
		GRPCAddr:     m.GetGrpcAddr(),
		HTTPAddr:     m.GetHttpAddr(),
		AppliedIndex: m.GetAppliedIndex(),
		CommitIndex:  m.GetCommitIndex(),
		LastIndex:    m.GetLastIndex(),
		Error:        m.GetError(),
	}
}

// nonNil makes an absent map print as {} rather than null, so scripts can
// index it without a null check.
func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// formatTime renders a server timestamp in UTC. Zero means the server did
// not set it, which prints as empty rather than as 1970.
func formatTime(unixNano int64, layout string) string {
	if unixNano == 0 {
		return ""
	}
	return time.Unix(0, unixNano).UTC().Format(layout)
}

// formatMap renders a map as k=v,k=v sorted by key: the same syntax the
// --selector and --label flags accept.
func formatMap(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// printer writes command results to stdout in the chosen format. now is the
// reference for relative times ("3s ago") and for the duration of what is
// still running; the zero value means time.Now().
type printer struct {
	w      io.Writer
	format string
	now    time.Time
}

func (p printer) clock() time.Time {
	if p.now.IsZero() {
		return time.Now()
	}
	return p.now
}

func (p printer) json() bool { return p.format == formatJSON }

func (p printer) writeJSON(v any) error {
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	// Notes and URLs are read by people and jq, not embedded in HTML.
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes rows under upper-case headers, aligned with tabwriter.
func (p printer) table(header []string, rows [][]string) error {
	return p.aligned(2, func(tw io.Writer) {
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, row := range rows {
			cells := make([]string, len(row))
			for i, c := range row {
				cells[i] = cell(c)
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
	})
}

// aligned aligns the tab-separated lines that write produces, padding
// columns with at least padding spaces. tabwriter pads a line whose last
// cells are empty; those trailing blanks are trimmed because they only get
// in the way of diffs and greps.
func (p printer) aligned(padding int, write func(tw io.Writer)) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, padding, ' ', 0)
	write(tw)
	if err := tw.Flush(); err != nil {
		return err
	}
	var out strings.Builder
	for line := range strings.Lines(b.String()) {
		out.WriteString(strings.TrimRight(line, " \n") + "\n")
	}
	_, err := io.WriteString(p.w, out.String())
	return err
}

// cell makes a server-supplied string safe for one table cell: a tab or
// newline would break the columns, and an escape sequence would be
// interpreted by the terminal.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// text is cell for multi-line text (release notes): newlines and tabs are
// kept, other control characters dropped.
func text(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case unicode.IsControl(r):
			return -1
		}
		return r
	}, s)
}

// created prints the confirmation of a create command: one line in table
// format, the created object in JSON.
func (p printer) created(kind, name string, index uint64, obj any) error {
	if p.json() {
		return p.writeJSON(obj)
	}
	_, err := fmt.Fprintf(p.w, "created %s %s (index %d)\n", kind, cell(name), index)
	return err
}

type envUpdatedJSON struct {
	Environment environmentJSON `json:"environment"`
	Joining     []string        `json:"joining"`
	Leaving     []string        `json:"leaving"`
	DryRun      bool            `json:"dry_run"`
	Index       uint64          `json:"index"`
}

type envDeletedJSON struct {
	Name  string `json:"name"`
	Index uint64 `json:"index"`
}

// envUpdated prints what env update did (or, with --dry-run, would do):
// a line saying so, then the hosts that join and leave.
func (p printer) envUpdated(resp *relv1.UpdateEnvironmentResponse) error {
	env := resp.GetEnvironment()
	joining, leaving := nonNilStrings(resp.GetJoining()), nonNilStrings(resp.GetLeaving())
	if p.json() {
		return p.writeJSON(envUpdatedJSON{Environment: toEnvironmentJSON(env), Joining: joining, Leaving: leaving,
			DryRun: resp.GetDryRun(), Index: resp.GetIndex()})
	}
	var head string
	switch {
	case resp.GetDryRun():
		head = fmt.Sprintf("dry run: environment %s would have selector %s (nothing changed)", cell(env.GetName()), formatMap(env.GetSelector()))
	case resp.GetIndex() == 0:
		head = fmt.Sprintf("environment %s unchanged: it already has selector %s and that description", cell(env.GetName()), formatMap(env.GetSelector()))
	default:
		head = fmt.Sprintf("updated environment %s (index %d): selector %s", cell(env.GetName()), resp.GetIndex(), formatMap(env.GetSelector()))
	}
	if _, err := fmt.Fprintln(p.w, head); err != nil {
		return err
	}
	if len(joining)+len(leaving) == 0 {
		_, err := fmt.Fprintln(p.w, "no host joins or leaves")
		return err
	}
	join, leave := "joins", "leaves"
	if resp.GetDryRun() {
		join, leave = "would join", "would leave"
	}
	rows := make([][]string, 0, len(joining)+len(leaving))
	for _, h := range joining {
		rows = append(rows, []string{h, join})
	}
	for _, h := range leaving {
		rows = append(rows, []string{h, leave})
	}
	return p.table([]string{"HOST", "CHANGE"}, rows)
}

func (p printer) envDeleted(name string, index uint64) error {
	if p.json() {
		return p.writeJSON(envDeletedJSON{Name: name, Index: index})
	}
	_, err := fmt.Fprintf(p.w, "deleted environment %s (index %d)\n", cell(name), index)
	return err
}

type releaseDeletedJSON struct {
	App     string `json:"app"`
	Version string `json:"version"`
	Index   uint64 `json:"index"`
}

func (p printer) releaseDeleted(app, version string, index uint64) error {
	if p.json() {
		return p.writeJSON(releaseDeletedJSON{App: app, Version: version, Index: index})
	}
	_, err := fmt.Fprintf(p.w, "deleted release %s@%s (index %d)\n", cell(app), cell(version), index)
	return err
}

func (p printer) apps(apps []*relv1.App) error {
	if p.json() {
		out := struct {
			Apps []appJSON `json:"apps"`
		}{Apps: []appJSON{}}
		for _, a := range apps {
			out.Apps = append(out.Apps, toAppJSON(a))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(apps))
	for _, a := range apps {
		rows = append(rows, []string{a.GetName(), a.GetDescription(), formatTime(a.GetCreatedUnixNano(), time.RFC3339)})
	}
	return p.table([]string{"NAME", "DESCRIPTION", "CREATED"}, rows)
}

func (p printer) environments(envs []*relv1.Environment) error {
	if p.json() {
		out := struct {
			Environments []environmentJSON `json:"environments"`
		}{Environments: []environmentJSON{}}
		for _, e := range envs {
			out.Environments = append(out.Environments, toEnvironmentJSON(e))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(envs))
	for _, e := range envs {
		promote := "defaults"
		if d := e.GetDefaultSpec(); d != nil {
			promote = specSummary(d)
		}
		rows = append(rows, []string{e.GetName(), formatMap(e.GetSelector()), e.GetDescription(), promote,
			formatTime(e.GetCreatedUnixNano(), time.RFC3339)})
	}
	return p.table([]string{"NAME", "SELECTOR", "DESCRIPTION", "PROMOTE WITH", "CREATED"}, rows)
}

func (p printer) releases(releases []*relv1.Release) error {
	if p.json() {
		out := struct {
			Releases []releaseJSON `json:"releases"`
		}{Releases: []releaseJSON{}}
		for _, r := range releases {
			out.Releases = append(out.Releases, toReleaseJSON(r))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(releases))
	for _, r := range releases {
		rows = append(rows, []string{r.GetApp(), r.GetVersion(), r.GetCommit(), formatMap(r.GetLabels()),
			formatTime(r.GetCreatedUnixNano(), time.RFC3339)})
	}
	return p.table([]string{"APP", "VERSION", "COMMIT", "LABELS", "CREATED"}, rows)
}

// release prints one release in full: a key: value block in table format,
// with the notes last because they may span many lines.
func (p printer) release(r *relv1.Release) error {
	if p.json() {
		return p.writeJSON(toReleaseJSON(r))
	}
	notes := strings.TrimRightFunc(text(r.GetNotes()), unicode.IsSpace)
	err := p.aligned(1, func(tw io.Writer) {
		for _, kv := range [][2]string{
			{"App", r.GetApp()},
			{"Version", r.GetVersion()},
			{"Artifact URL", r.GetArtifactUrl()},
			{"SHA256", r.GetSha256()},
			{"Size", formatSize(r.GetSize())},
			{"Commit", r.GetCommit()},
			{"Labels", formatMap(r.GetLabels())},
			{"Created", formatTime(r.GetCreatedUnixNano(), time.RFC3339)},
			{"Create index", strconv.FormatUint(r.GetCreateIndex(), 10)},
			{"Modify index", strconv.FormatUint(r.GetModifyIndex(), 10)},
		} {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], cell(kv[1]))
		}
		if r.GetBlocked() {
			fmt.Fprintf(tw, "Blocked:\t%s\n", cell(blockWords(r)))
		}
		if r.GetBuildUrl() != "" {
			fmt.Fprintf(tw, "Build:\t%s\n", cell(r.GetBuildUrl()))
		}
		if r.GetCommitUnixNano() != 0 {
			fmt.Fprintf(tw, "Committed:\t%s\n", formatTime(r.GetCommitUnixNano(), time.RFC3339))
		}
		if r.GetChangelog() != "" {
			fmt.Fprintf(tw, "Changelog:\t%d bytes ('relctl release notes %s@%s --since ...' shows it)\n", len(r.GetChangelog()), r.GetApp(), r.GetVersion())
		}
		if notes == "" {
			fmt.Fprintf(tw, "Notes:\t(none)\n")
		}
	})
	if err != nil || notes == "" {
		return err
	}
	var b strings.Builder
	b.WriteString("Notes:\n")
	for _, line := range strings.Split(notes, "\n") {
		b.WriteString(strings.TrimRight("  "+line, " \t") + "\n")
	}
	_, err = io.WriteString(p.w, b.String())
	return err
}

func (p printer) members(members []*relv1.Member) error {
	if p.json() {
		out := struct {
			Members []memberJSON `json:"members"`
		}{Members: []memberJSON{}}
		for _, m := range members {
			out.Members = append(out.Members, toMemberJSON(m))
		}
		return p.writeJSON(out)
	}
	// The ERROR column is noise when every member answered, which is the
	// normal case, so it only appears when there is something to show.
	withErr := slices.ContainsFunc(members, func(m *relv1.Member) bool { return m.GetError() != "" })
	header := []string{"ID", "ROLE", "LEADER", "SUFFRAGE", "RAFT ADDR", "GRPC ADDR", "HTTP ADDR", "APPLIED INDEX"}
	if withErr {
		header = append(header, "ERROR")
	}
	rows := make([][]string, 0, len(members))
	for _, m := range members {
		leader := ""
		if m.GetLeader() {
			leader = "*"
		}
		row := []string{m.GetId(), m.GetRole(), leader, m.GetSuffrage(), m.GetRaftAddr(), m.GetGrpcAddr(), m.GetHttpAddr(),
			strconv.FormatUint(m.GetAppliedIndex(), 10)}
		if withErr {
			row = append(row, m.GetError())
		}
		rows = append(rows, row)
	}
	return p.table(header, rows)
}

func (p printer) removed(id string, index uint64) error {
	if p.json() {
		return p.writeJSON(removedJSON{ID: id, Index: index})
	}
	_, err := fmt.Fprintf(p.w, "removed node %s (index %d)\n", cell(id), index)
	return err
}

func (p printer) version(v versionJSON) error {
	if p.json() {
		return p.writeJSON(v)
	}
	return p.aligned(1, func(tw io.Writer) {
		fmt.Fprintf(tw, "Client version:\t%s\n", cell(v.ClientVersion))
		if v.Server == nil {
			fmt.Fprintf(tw, "Server:\t%s\n", cell(v.ServerError))
			return
		}
		fmt.Fprintf(tw, "Server:\t%s at %s\n", cell(v.Server.ID), cell(v.Server.Address))
		fmt.Fprintf(tw, "Server version:\t%s\n", cell(v.Server.Version))
	})
}

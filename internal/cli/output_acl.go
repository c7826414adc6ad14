package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// JSON shapes of the acl and agent token commands. Secrets appear only in
// the answer of the command that made them, and only when not written to
// an --out file (secret_file names it then).

type aclTokenJSON struct {
	AccessorID   string   `json:"accessor_id"`
	Name         string   `json:"name"`
	Roles        []string `json:"roles"`
	Apps         []string `json:"apps"`
	Environments []string `json:"environments"`
	CreatedAt    string   `json:"created_at"`
	ExpiresAt    string   `json:"expires_at"`
	CreatedBy    string   `json:"created_by"`
	CreateIndex  uint64   `json:"create_index"`
	ModifyIndex  uint64   `json:"modify_index"`
}

type aclTokenSecretJSON struct {
	Token      aclTokenJSON `json:"token"`
	Secret     string       `json:"secret"`
	SecretFile string       `json:"secret_file"`
	Index      uint64       `json:"index"`
}

type joinTokenJSON struct {
	AccessorID  string            `json:"accessor_id"`
	Description string            `json:"description"`
	Uses        uint32            `json:"uses"`
	UsesLeft    uint32            `json:"uses_left"`
	Labels      map[string]string `json:"labels"`
	NodeIDs     []string          `json:"node_ids"`
	UsedBy      []string          `json:"used_by"`
	CreatedAt   string            `json:"created_at"`
	ExpiresAt   string            `json:"expires_at"`
	CreatedBy   string            `json:"created_by"`
	CreateIndex uint64            `json:"create_index"`
	ModifyIndex uint64            `json:"modify_index"`
}

// joinTokenSecretJSON is a new join token. AgentCommand is the rel-agent
// command line that enrols with it, with FILE or <node-id> left for the
// reader to fill in.
type joinTokenSecretJSON struct {
	Token        joinTokenJSON `json:"token"`
	Secret       string        `json:"secret"`
	SecretFile   string        `json:"secret_file"`
	CAPins       []string      `json:"ca_pins"`
	Servers      []string      `json:"servers"`
	AgentCommand string        `json:"agent_command"`
	Index        uint64        `json:"index"`
}

type tokenRevokedJSON struct {
	AccessorID string `json:"accessor_id"`
	Index      uint64 `json:"index"`
}

type agentRevocationJSON struct {
	AgentID   string `json:"agent_id"`
	RevokedAt string `json:"revoked_at"`
	RevokedBy string `json:"revoked_by"`
	Reason    string `json:"reason"`
	Index     uint64 `json:"index"`
}

type grantJSON struct {
	Role         string   `json:"role"`
	Apps         []string `json:"apps"`
	Environments []string `json:"environments"`
}

// whoAmIJSON is the caller as the server sees it. Kind is token, client,
// server, agent or anonymous; ID is a token's accessor or a certificate's
// name.
type whoAmIJSON struct {
	Kind      string            `json:"kind"`
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Cluster   string            `json:"cluster"`
	Grants    []grantJSON       `json:"grants"`
	ExpiresAt string            `json:"expires_at"`
	Labels    map[string]string `json:"labels"`
	ServerID  string            `json:"server_id"`
}

func toACLTokenJSON(t *relv1.ACLToken) aclTokenJSON {
	return aclTokenJSON{
		AccessorID:   t.GetAccessorId(),
		Name:         t.GetName(),
		Roles:        nonNilStrings(t.GetRoles()),
		Apps:         nonNilStrings(t.GetApps()),
		Environments: nonNilStrings(t.GetEnvironments()),
		CreatedAt:    jsonTime(t.GetCreatedUnixNano()),
		ExpiresAt:    jsonTime(t.GetExpiresUnixNano()),
		CreatedBy:    t.GetCreatedBy(),
		CreateIndex:  t.GetCreateIndex(),
		ModifyIndex:  t.GetModifyIndex(),
	}
}

func toACLTokenSecretJSON(resp *relv1.ACLTokenSecretResponse, secret, file string) aclTokenSecretJSON {
	return aclTokenSecretJSON{Token: toACLTokenJSON(resp.GetToken()), Secret: secret, SecretFile: file, Index: resp.GetIndex()}
}

func toJoinTokenJSON(t *relv1.JoinToken) joinTokenJSON {
	return joinTokenJSON{
		AccessorID:  t.GetAccessorId(),
		Description: t.GetDescription(),
		Uses:        t.GetUses(),
		UsesLeft:    t.GetUsesLeft(),
		Labels:      nonNil(t.GetLabels()),
		NodeIDs:     nonNilStrings(t.GetNodeIds()),
		UsedBy:      nonNilStrings(t.GetUsedBy()),
		CreatedAt:   jsonTime(t.GetCreatedUnixNano()),
		ExpiresAt:   jsonTime(t.GetExpiresUnixNano()),
		CreatedBy:   t.GetCreatedBy(),
		CreateIndex: t.GetCreateIndex(),
		ModifyIndex: t.GetModifyIndex(),
	}
}

func toWhoAmIJSON(resp *relv1.WhoAmIResponse) whoAmIJSON {
	p := resp.GetPrincipal()
	out := whoAmIJSON{
		Kind:      p.GetKind(),
		ID:        p.GetId(),
		Name:      p.GetName(),
		Cluster:   p.GetCluster(),
		Grants:    []grantJSON{},
		ExpiresAt: jsonTime(p.GetExpiresUnixNano()),
		Labels:    nonNil(p.GetLabels()),
		ServerID:  resp.GetServerId(),
	}
	for _, g := range p.GetGrants() {
		out.Grants = append(out.Grants, grantJSON{Role: g.GetRole(), Apps: nonNilStrings(g.GetApps()), Environments: nonNilStrings(g.GetEnvironments())})
	}
	return out
}

// describeScope renders the apps and environments a role is limited to.
func describeScope(apps, envs []string) string {
	var parts []string
	if len(apps) > 0 {
		parts = append(parts, "apps "+strings.Join(apps, ","))
	}
	if len(envs) > 0 {
		parts = append(parts, "environments "+strings.Join(envs, ","))
	}
	if len(parts) == 0 {
		return "all apps and environments"
	}
	return strings.Join(parts, "; ")
}

// expiry renders an expiry time for tables: "never", or the time with how
// long is left or that it passed.
func (p printer) expiry(unixNano int64) string {
	if unixNano == 0 {
		return "never"
	}
	t := time.Unix(0, unixNano)
	if d := t.Sub(p.clock()); d > 0 {
		return formatTime(unixNano, time.RFC3339) + " (in " + humanDuration(d) + ")"
	}
	return formatTime(unixNano, time.RFC3339) + " (expired)"
}

// expiryOf is expiry for a JSON time ("" is never).
func (p printer) expiryOf(jsonTime string) string {
	t, err := time.Parse(time.RFC3339Nano, jsonTime)
	if err != nil {
		return p.expiry(0)
	}
	return p.expiry(t.UnixNano())
}

func (p printer) aclTokenSecret(how string, t aclTokenSecretJSON) error {
	if p.json() {
		return p.writeJSON(t)
	}
	head := fmt.Sprintf("created token %s (accessor %s, index %d)\n", cell(t.Token.Name), t.Token.AccessorID, t.Index)
	keep := "Keep the secret: it is shown only this once. Use it with --token-file FILE or REL_TOKEN.\n"
	if t.SecretFile != "" {
		keep = fmt.Sprintf("Use it with --token-file %s or REL_TOKEN_FILE.\n", cell(t.SecretFile))
	}
	if how == "bootstrap" {
		head = fmt.Sprintf("ACLs bootstrapped: created the management token (accessor %s, index %d)\n", t.Token.AccessorID, t.Index)
		keep = "Keep the secret safe: it is shown only this once, and it may do everything.\n" +
			"Use it with --token-file FILE or REL_TOKEN; make tokens with less power for daily work (relctl acl token create).\n"
		if t.SecretFile != "" {
			keep = "Keep the file safe: the token may do everything.\n" +
				fmt.Sprintf("Use it with --token-file %s or REL_TOKEN_FILE; make tokens with less power for daily work (relctl acl token create).\n", cell(t.SecretFile))
		}
	}
	if _, err := io.WriteString(p.w, head); err != nil {
		return err
	}
	err := p.aligned(1, func(tw io.Writer) {
		fmt.Fprintf(tw, "Roles:\t%s\n", cell(strings.Join(t.Token.Roles, ", ")))
		fmt.Fprintf(tw, "Scope:\t%s\n", cell(describeScope(t.Token.Apps, t.Token.Environments)))
		fmt.Fprintf(tw, "Expires:\t%s\n", p.expiryOf(t.Token.ExpiresAt))
		if t.SecretFile != "" {
			fmt.Fprintf(tw, "Secret:\twritten to %s (mode 0600)\n", cell(t.SecretFile))
		} else {
			fmt.Fprintf(tw, "Secret:\t%s\n", cell(t.Secret))
		}
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(p.w, keep)
	return err
}

func (p printer) aclTokens(toks []*relv1.ACLToken) error {
	if p.json() {
		out := struct {
			Tokens []aclTokenJSON `json:"tokens"`
		}{Tokens: []aclTokenJSON{}}
		for _, t := range toks {
			out.Tokens = append(out.Tokens, toACLTokenJSON(t))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(toks))
	for _, t := range toks {
		rows = append(rows, []string{t.GetAccessorId(), t.GetName(), strings.Join(t.GetRoles(), ","),
			strings.Join(t.GetApps(), ","), strings.Join(t.GetEnvironments(), ","),
			p.expiry(t.GetExpiresUnixNano()), t.GetCreatedBy()})
	}
	return p.table([]string{"ACCESSOR", "NAME", "ROLES", "APPS", "ENVIRONMENTS", "EXPIRES", "CREATED BY"}, rows)
}

func (p printer) tokenRevoked(kind, accessor string, index uint64) error {
	if p.json() {
		return p.writeJSON(tokenRevokedJSON{AccessorID: accessor, Index: index})
	}
	_, err := fmt.Fprintf(p.w, "revoked %s %s (index %d)\n", kind, cell(accessor), index)
	return err
}

func (p printer) whoAmI(w whoAmIJSON) error {
	if p.json() {
		return p.writeJSON(w)
	}
	return p.aligned(1, func(tw io.Writer) {
		line := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, cell(v)) }
		switch w.Kind {
		case "anonymous":
			line("You are", "anonymous: relctl sent no token and no client certificate")
		case "token":
			line("You are", fmt.Sprintf("token %s (%s)", w.ID, w.Name))
		default:
			line("You are", w.Kind+" "+w.ID)
		}
		if w.Cluster != "" {
			line("Cluster", w.Cluster)
		}
		if len(w.Grants) == 0 {
			line("Roles", "none")
		}
		label := "Roles:"
		for _, g := range w.Grants {
			fmt.Fprintf(tw, "%s\t%s\n", label, cell(g.Role+" on "+describeScope(g.Apps, g.Environments)))
			label = ""
		}
		if len(w.Labels) > 0 {
			line("Labels", formatMap(w.Labels))
		}
		if w.Kind != "anonymous" {
			line("Expires", p.expiryOf(w.ExpiresAt))
		}
		line("Answered by", w.ServerID)
	})
}

func (p printer) joinTokenSecret(t joinTokenSecretJSON) error {
	if p.json() {
		return p.writeJSON(t)
	}
	if _, err := fmt.Fprintf(p.w, "created join token %s (index %d)\n", t.Token.AccessorID, t.Index); err != nil {
		return err
	}
	err := p.aligned(1, func(tw io.Writer) {
		if t.SecretFile != "" {
			fmt.Fprintf(tw, "Secret:\twritten to %s (mode 0600)\n", cell(t.SecretFile))
		} else {
			fmt.Fprintf(tw, "Secret:\t%s\n", cell(t.Secret))
		}
		label := "CA pin:"
		for _, pin := range t.CAPins {
			fmt.Fprintf(tw, "%s\t%s\n", label, pin)
			label = ""
		}
		fmt.Fprintf(tw, "Expires:\t%s\n", p.expiryOf(t.Token.ExpiresAt))
		fmt.Fprintf(tw, "Uses:\t%d\n", t.Token.Uses)
		if len(t.Token.Labels) > 0 {
			fmt.Fprintf(tw, "Labels:\t%s (fixed in the agents' certificates)\n", cell(formatMap(t.Token.Labels)))
		}
		if len(t.Token.NodeIDs) > 0 {
			fmt.Fprintf(tw, "Node ids:\t%s (no other node may enrol with it)\n", cell(strings.Join(t.Token.NodeIDs, ", ")))
		} else {
			fmt.Fprintf(tw, "Node ids:\tany\n")
		}
		if t.Token.Description != "" {
			fmt.Fprintf(tw, "Description:\t%s\n", cell(t.Token.Description))
		}
	})
	if err != nil {
		return err
	}
	var b strings.Builder
	if t.SecretFile != "" {
		fmt.Fprintf(&b, "Copy %s to the host (mode 0600) and start the agent there:\n", cell(t.SecretFile))
	} else {
		b.WriteString("Keep the secret: it is shown only this once. Save it on the host in FILE (mode 0600)\nand start the agent there:\n")
	}
	fmt.Fprintf(&b, "  %s\n", cell(t.AgentCommand))
	_, err = io.WriteString(p.w, b.String())
	return err
}

func (p printer) joinTokens(toks []*relv1.JoinToken) error {
	if p.json() {
		out := struct {
			Tokens []joinTokenJSON `json:"tokens"`
		}{Tokens: []joinTokenJSON{}}
		for _, t := range toks {
			out.Tokens = append(out.Tokens, toJoinTokenJSON(t))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(toks))
	for _, t := range toks {
		rows = append(rows, []string{t.GetAccessorId(),
			strconv.FormatUint(uint64(t.GetUsesLeft()), 10) + "/" + strconv.FormatUint(uint64(t.GetUses()), 10),
			p.expiry(t.GetExpiresUnixNano()), formatMap(t.GetLabels()), nodesOrAny(t.GetNodeIds()), strings.Join(t.GetUsedBy(), ","),
			t.GetDescription(), t.GetCreatedBy()})
	}
	return p.table([]string{"ACCESSOR", "USES LEFT", "EXPIRES", "LABELS", "NODES", "USED BY", "DESCRIPTION", "CREATED BY"}, rows)
}

func (p printer) agentRevoked(rev agentRevocationJSON) error {
	if p.json() {
		return p.writeJSON(rev)
	}
	_, err := fmt.Fprintf(p.w, "revoked agent %s (index %d): its streams are closed and its certificates refused;\n"+
		"it may enrol again only with a join token made from now on\n", cell(rev.AgentID), rev.Index)
	return err
}

func nodesOrAny(ids []string) string {
	if len(ids) == 0 {
		return "any"
	}
	return strings.Join(ids, ",")
}

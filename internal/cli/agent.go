package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/validate"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) agentCommand() *cobra.Command {
	return noun("agent",
		"List, inspect, enrol and revoke the agents on production hosts",
		`An agent is a host running rel-agent. It connects to a rel-server with its
labels and host facts, reports what it runs per app, and sends heartbeats
with the host's load. Environments select agents by their labels.

An agent proves who it is with a short-lived certificate of the cluster. It
gets one by enrolling with a join token ("agent token create") and the CA
pin, making its key on the host, and renews it by itself. "agent revoke"
closes an agent's streams and refuses its certificates.`,
		`  relctl agent list --env prod
  relctl agent show web-1
  relctl agent token create --uses 3 --labels env=prod --out join.token
  relctl agent revoke web-1 --reason "host decommissioned"`,
		r.agentListCommand(),
		r.agentShowCommand(),
		noun("token",
			"Create, list and revoke the join tokens agents enrol with",
			`A join token lets agents enrol: an agent presents it with a certificate
request and gets a certificate bound to its node id. Tokens expire, allow a
number of enrolments, and may fix labels in the certificates they issue.
Managing them needs the operator or admin role.`,
			`  relctl agent token create --ttl 1h --uses 1
  relctl agent token list
  relctl agent token revoke 9a3f0c1d2b4e5f60`,
			r.agentTokenCreateCommand(),
			r.agentTokenListCommand(),
			r.agentTokenRevokeCommand(),
		),
		r.agentRevokeCommand(),
	)
}

func (r *runner) agentTokenCreateCommand() *cobra.Command {
	var (
		ttl              time.Duration
		uses             uint32
		labelFlags       []string
		nodeIDs          []string
		description, out string
		cmd              *cobra.Command
	)
	cmd = &cobra.Command{
		Use:   "create [--ttl 1h] [--uses 1] [--labels K=V,...] [--node-id ID]... [--description TEXT] [--out FILE]",
		Short: "Create a join token for agents to enrol with",
		Long: `Create a join token: it expires after --ttl (default 1h, at most 720h) and
allows --uses enrolments (default 1). --labels are fixed in the
certificates it issues: an agent enrolled with it may not claim other values
for those keys. --node-id (repeatable) binds the token to those node ids:
any other id is refused (PermissionDenied); without it, the token enrols
any node id, so keep it as secret as the hosts it is meant for. With
--node-id and no --uses, the token allows one use per node id.

It prints the secret (shown only this once; with --out FILE it is written to
FILE, mode 0600, never overwriting a file), the CA pin or pins the agent
checks on its first contact (sha256 of a CA's public key), and the rel-agent
command that enrols with it, naming the servers of --addr.`,
		Example: `  relctl agent token create
  relctl agent token create --ttl 24h --uses 20 --labels env=prod,zone=eu-1 --description "prod batch 3" --out join.token
  relctl agent token create --node-id web-7 --node-id web-8 --labels env=prod --out web-7-8.token
  relctl agent token create -o json | jq -r .secret`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			labels, err := parseKeyValues("labels", labelFlags)
			if err != nil {
				return err
			}
			if ttl < time.Second {
				return usagef("invalid --ttl %s: want at least 1s", ttl)
			}
			if uses == 0 {
				return usagef("invalid --uses 0: want at least 1")
			}
			for _, id := range nodeIDs {
				if err := validate.NodeID("--node-id", id); err != nil {
					return usagef("%s", strings.TrimPrefix(err.Error(), validate.ErrInvalid.Error()+": "))
				}
			}
			if !cmd.Flags().Changed("uses") && len(nodeIDs) > 0 {
				uses = uint32(len(nodeIDs))
			}
			if err := checkOutFile(out); err != nil {
				return err
			}
			var resp *relv1.CreateJoinTokenResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewACLServiceClient(cc).CreateJoinToken(ctx, &relv1.CreateJoinTokenRequest{
					Description: description, TtlSeconds: ttlSeconds(ttl), Uses: uses, Labels: labels, NodeIds: nodeIDs,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printSecret(out, resp.GetSecret(), func(secret, file string) error {
				return r.printer().joinTokenSecret(r.joinTokenSecretJSON(resp, secret, file))
			})
		}),
	}
	f := cmd.Flags()
	f.DurationVar(&ttl, "ttl", time.Hour, "the token expires after `DURATION`")
	f.Uint32Var(&uses, "uses", 1, "how many agents may enrol with it (`N`)")
	f.StringArrayVar(&labelFlags, "labels", nil, "labels `KEY=VALUE[,...]` fixed in the agents' certificates (repeatable)")
	f.StringArrayVar(&nodeIDs, "node-id", nil, "only this node `ID` may enrol with the token (repeatable; default: any)")
	f.StringVar(&description, "description", "", "`TEXT` saying what the token is for, for people")
	f.StringVar(&out, "out", "", "write the secret to `FILE` (mode 0600) instead of printing it")
	_ = cmd.MarkFlagFilename("out")
	return cmd
}

// joinTokenSecretJSON assembles the answer of "agent token create", with
// the rel-agent command that enrols with the token.
func (r *runner) joinTokenSecretJSON(resp *relv1.CreateJoinTokenResponse, secret, file string) joinTokenSecretJSON {
	tokenFile := "FILE"
	if file != "" {
		tokenFile = file
	}
	pin := "sha256:..."
	if pins := resp.GetCaPins(); len(pins) > 0 {
		pin = pins[0]
	}
	nodeID := "<node-id>"
	if ids := resp.GetToken().GetNodeIds(); len(ids) == 1 {
		nodeID = ids[0]
	}
	agentCmd := fmt.Sprintf("rel-agent --servers %s --join-token-file %s --ca-pin %s --node-id %s",
		strings.Join(r.addrs, ","), tokenFile, pin, nodeID)
	if labels := resp.GetToken().GetLabels(); len(labels) > 0 {
		agentCmd += " --labels " + formatMap(labels)
	}
	return joinTokenSecretJSON{
		Token:        toJoinTokenJSON(resp.GetToken()),
		Secret:       secret,
		SecretFile:   file,
		CAPins:       nonNilStrings(resp.GetCaPins()),
		Servers:      r.addrs,
		AgentCommand: agentCmd,
		Index:        resp.GetIndex(),
	}
}

func (r *runner) agentTokenListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List join tokens (never their secrets)",
		Long: `List every join token: accessor, enrolments left of those allowed, expiry,
the labels it fixes, the node ids that enrolled with it, and who made it.
Needs the operator or admin role.`,
		Example: `  relctl agent token list
  relctl agent token list -o json | jq -r '.tokens[] | select(.uses_left > 0) | .accessor_id'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			toks, err := r.listJoinTokens(ctx)
			if err != nil {
				return err
			}
			return r.printer().joinTokens(toks)
		}),
	}
}

func (r *runner) agentTokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ACCESSOR",
		Short: "Revoke a join token",
		Long: `Revoke the join token with accessor ACCESSOR: no agent may enrol with it
from then on. Agents that already enrolled keep their certificates; revoke
them with "relctl agent revoke ID". Needs the operator or admin role.`,
		Example: `  relctl agent token revoke 9a3f0c1d2b4e5f60`,
		Args:    exactArgs("ACCESSOR"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
				toks, err := r.listJoinTokens(ctx)
				ids := make([]string, 0, len(toks))
				for _, t := range toks {
					ids = append(ids, t.GetAccessorId())
				}
				return ids, err
			})
		},
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.RevokeJoinTokenResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewACLServiceClient(cc).RevokeJoinToken(ctx, &relv1.RevokeJoinTokenRequest{AccessorId: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().tokenRevoked("join token", args[0], resp.GetIndex())
		}),
	}
}

func (r *runner) agentRevokeCommand() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke ID [--reason TEXT]",
		Short: "Revoke an agent: close its streams and refuse its certificates",
		Long: `Revoke agent ID: every server closes its streams within seconds and refuses
the certificates it was issued until now. It may come back only by enrolling
with a join token made after the revocation. An id that never connected may
be revoked too (a host whose join token leaked). Needs the operator or admin
role.`,
		Example:           `  relctl agent revoke web-1 --reason "host decommissioned"`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: r.completeAgentID,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.RevokeAgentResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewACLServiceClient(cc).RevokeAgent(ctx, &relv1.RevokeAgentRequest{AgentId: args[0], Reason: reason}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			rev := resp.GetRevocation()
			return r.printer().agentRevoked(agentRevocationJSON{
				AgentID: rev.GetAgentId(), RevokedAt: jsonTime(rev.GetRevokedUnixNano()), RevokedBy: rev.GetRevokedBy(),
				Reason: rev.GetReason(), Index: resp.GetIndex(),
			})
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "`TEXT` saying why, recorded with the revocation")
	return cmd
}

func (r *runner) listJoinTokens(ctx context.Context) ([]*relv1.JoinToken, error) {
	var resp *relv1.ListJoinTokensResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewACLServiceClient(cc).ListJoinTokens(ctx, &relv1.ListJoinTokensRequest{}, opts...)
		return err
	})
	return resp.GetTokens(), err
}

func (r *runner) agentListCommand() *cobra.Command {
	var (
		env   string
		limit int
	)
	cmd := &cobra.Command{
		Use:     "list [--env ENV] [--limit N]",
		Aliases: []string{"ls"},
		Short:   "List agents with their apps and load",
		Long: `List every agent, or only those environment --env selects. LAST SEEN is the
last heartbeat of a connected agent and the disconnection of one that is
not. APPS lists app@version:phase for each app the agent reports. CPU%,
MEM% and DISK FREE are the latest heartbeat's, and empty when the server
holding the agent's stream did not answer. Agents come by id, in pages
the server answers and relctl follows; --limit stops after N agents. The
answer comes from the replica of the server asked; add --consistent to
read from the leader instead.`,
		Example: `  relctl agent list
  relctl agent list --env prod
  relctl agent list -o json | jq -r '.agents[] | select(.connected | not) | .id'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if err := checkLimit(limit); err != nil {
				return err
			}
			agents, err := r.listAgents(ctx, env, limit)
			if err != nil {
				return err
			}
			return r.printer().agents(agents)
		}),
	}
	cmd.Flags().StringVar(&env, "env", "", "only the agents environment `ENV` selects")
	limitFlag(cmd, &limit)
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	return cmd
}

func (r *runner) agentShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one agent in full",
		Long: `Show agent ID: its labels, version, host facts, connection, the
environments that select it, its load, and every app it reports, with the
output of a failing install hook. The answer comes from the replica of the
server asked; add --consistent to read from the leader instead.`,
		Example: `  relctl agent show web-1
  relctl agent show web-1 -o json | jq '.apps[] | select(.phase == "failed") | .output'`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: r.completeAgentID,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.GetAgentResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).GetAgent(ctx,
					&relv1.GetAgentRequest{Read: r.readOptions(), Id: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().agent(resp.GetAgent())
		}),
	}
}

// listAgents lists agents (those env selects, if set), following the
// pages, at most limit of them (0: all).
func (r *runner) listAgents(ctx context.Context, env string, limit int) ([]*relv1.AgentStatus, error) {
	return allPages(limit, func(tok string, size uint32) ([]*relv1.AgentStatus, string, error) {
		var resp *relv1.ListAgentsResponse
		_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
			resp, err = relv1.NewControlServiceClient(cc).ListAgents(ctx,
				&relv1.ListAgentsRequest{Read: r.readOptions(), Environment: env, PageToken: tok, PageSize: size}, opts...)
			return err
		})
		return resp.GetAgents(), resp.GetNextPageToken(), err
	})
}

// completeAgentID suggests agent ids for an ID argument.
func (r *runner) completeAgentID(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		agents, err := r.listAgents(ctx, "", 0)
		ids := make([]string, 0, len(agents))
		for _, a := range agents {
			ids = append(ids, a.GetAgent().GetId())
		}
		return ids, err
	})
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) aclCommand() *cobra.Command {
	return noun("acl",
		"Bootstrap access control, and manage operator tokens",
		`People and pipelines prove who they are with an operator token (--token-file
or REL_TOKEN) or a client certificate (--cert-file and --key-file). A token
has a public accessor, which names it in lists and logs, and a secret,
shown once when the token is made and stored by the cluster only as a hash.

Each token holds one or more roles, optionally limited to apps and
environments by globs:
  viewer            reads everything but hook output
  release-creator   viewer, and registers releases and uploads artifacts
  deployer          viewer, and starts, steers and rolls back rollouts; reads
                    hook output
  operator          viewer, and runs the cluster: apps and environments,
                    membership, tokens, agent enrolment and revocation
  admin             everything

"acl bootstrap" makes the first (admin) token of a new cluster; it works
once. Only admins make admin tokens; operators make tokens of any other
role.`,
		`  relctl acl bootstrap --out ~/.rel-token
  export REL_TOKEN_FILE=~/.rel-token
  relctl acl token create --name ci-web --role release-creator --role deployer --app 'web*'
  relctl acl token list
  relctl acl whoami`,
		r.aclBootstrapCommand(),
		noun("token",
			"Create, list and revoke operator tokens",
			`Operator tokens: a public accessor and a secret shown once. Managing them
needs the operator or admin role.`,
			`  relctl acl token create --name ci --role deployer --env 'staging*' --ttl 720h --out ci.token
  relctl acl token list
  relctl acl token revoke 4f1c2a9be07d3e61`,
			r.aclTokenCreateCommand(),
			r.aclTokenListCommand(),
			r.aclTokenRevokeCommand(),
		),
		r.aclWhoAmICommand(),
	)
}

func (r *runner) aclBootstrapCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "bootstrap [--out FILE]",
		Short: "Create the cluster's first admin token (once per cluster)",
		Long: `Create the management token of a new cluster: a token with the admin role,
which may do everything, including making other tokens. It works once per
cluster, for whoever runs it first, and needs no credentials besides the
cluster's CA (--ca-file); later attempts are refused (FailedPrecondition).

The secret is shown only this once. With --out FILE it is written to FILE
(mode 0600, never overwriting a file) instead of being printed; FILE is
checked before the server is asked.

Use the secret with --token-file FILE or REL_TOKEN, and make tokens with
less power for daily work ("relctl acl token create").`,
		Example: `  relctl acl bootstrap --out ~/.rel-token && export REL_TOKEN_FILE=~/.rel-token
  relctl acl bootstrap -o json | jq -r .secret`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if err := checkOutFile(out); err != nil {
				return err
			}
			var resp *relv1.ACLTokenSecretResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewACLServiceClient(cc).Bootstrap(ctx, &relv1.ACLBootstrapRequest{}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printSecret(out, resp.GetSecret(), func(secret, file string) error {
				return r.printer().aclTokenSecret("bootstrap", toACLTokenSecretJSON(resp, secret, file))
			})
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "write the secret to `FILE` (mode 0600) instead of printing it")
	_ = cmd.MarkFlagFilename("out")
	return cmd
}

func (r *runner) aclTokenCreateCommand() *cobra.Command {
	var (
		name, out        string
		roles, apps, env []string
		ttl              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --role ROLE [--role ROLE]... [--app GLOB]... [--env GLOB]... [--ttl DURATION] [--out FILE]",
		Short: "Create an operator token",
		Long: `Create a token named NAME (what it is for, e.g. ci-web) holding the roles
--role (` + auth.RoleNames() + `). --app and --env limit every role to
the apps and environments matching one of the globs (path.Match syntax:
*, ?, [a-z]); without them the roles apply everywhere. --ttl makes the token
expire; without it the token lives until revoked.

Nobody hands out more than they hold: admins make tokens of any role,
operators of any role but admin, and a caller whose own roles are limited to
some apps or environments makes none (PermissionDenied).

The secret is shown only this once; with --out FILE it is written to FILE
(mode 0600, never overwriting a file) instead of being printed.`,
		Example: `  relctl acl token create --name dashboards --role viewer
  relctl acl token create --name ci-web --role release-creator --role deployer --app 'web*' --env staging --ttl 2160h
  relctl acl token create --name oncall --role operator --out oncall.token`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			for _, role := range roles {
				if _, err := auth.ParseRole(role); err != nil {
					return usagef("--role: %v", err)
				}
			}
			if err := auth.CheckGlobs("--app", apps); err != nil {
				return usagef("%v", err)
			}
			if err := auth.CheckGlobs("--env", env); err != nil {
				return usagef("%v", err)
			}
			if ttl < 0 {
				return usagef("invalid --ttl %s: must not be negative (leave it out for a token that does not expire)", ttl)
			}
			if err := checkOutFile(out); err != nil {
				return err
			}
			var resp *relv1.ACLTokenSecretResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewACLServiceClient(cc).CreateToken(ctx, &relv1.CreateACLTokenRequest{
					Name: name, Roles: roles, Apps: apps, Environments: env, TtlSeconds: ttlSeconds(ttl),
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printSecret(out, resp.GetSecret(), func(secret, file string) error {
				return r.printer().aclTokenSecret("create", toACLTokenSecretJSON(resp, secret, file))
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "`NAME` saying what the token is for, e.g. ci-web")
	f.StringSliceVar(&roles, "role", nil, "`ROLE` the token holds (repeatable): "+auth.RoleNames())
	f.StringArrayVar(&apps, "app", nil, "limit the roles to apps matching `GLOB` (repeatable)")
	f.StringArrayVar(&env, "env", nil, "limit the roles to environments matching `GLOB` (repeatable)")
	f.DurationVar(&ttl, "ttl", 0, "the token expires after `DURATION` (e.g. 720h); default never")
	f.StringVar(&out, "out", "", "write the secret to `FILE` (mode 0600) instead of printing it")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.MarkFlagFilename("out")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(roleNames(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("app", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return r.completeApp(cmd, toComplete)
	})
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	return cmd
}

func (r *runner) aclTokenListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List operator tokens (never their secrets)",
		Long: `List every operator token: accessor, name, roles, the apps and environments
they are limited to, expiry, and who made it. Secrets are not stored, so they
cannot be listed. Needs the operator or admin role.`,
		Example: `  relctl acl token list
  relctl acl token list -o json | jq -r '.tokens[] | select(.expires_at == "") | .accessor_id'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			toks, err := r.listACLTokens(ctx)
			if err != nil {
				return err
			}
			return r.printer().aclTokens(toks)
		}),
	}
}

func (r *runner) aclTokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ACCESSOR",
		Short: "Revoke an operator token",
		Long: `Revoke the token with accessor ACCESSOR (see "acl token list"): every
server refuses it from then on (Unauthenticated). Needs the operator or admin
role.`,
		Example: `  relctl acl token revoke 4f1c2a9be07d3e61`,
		Args:    exactArgs("ACCESSOR"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
				toks, err := r.listACLTokens(ctx)
				ids := make([]string, 0, len(toks))
				for _, t := range toks {
					ids = append(ids, t.GetAccessorId())
				}
				return ids, err
			})
		},
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.RevokeACLTokenResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewACLServiceClient(cc).RevokeToken(ctx, &relv1.RevokeACLTokenRequest{AccessorId: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().tokenRevoked("token", args[0], resp.GetIndex())
		}),
	}
}

func (r *runner) aclWhoAmICommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the servers take you for",
		Long: `Show the identity the server asked authenticated this connection as: a
token (accessor and name), a client certificate (name), or anonymous when
relctl sent neither; with the roles, the apps and environments they are
limited to, and when the credential expires. It needs no credentials, so it
is the way to check them.`,
		Example: `  relctl acl whoami
  REL_TOKEN_FILE=ci.token relctl acl whoami -o json`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			var resp *relv1.WhoAmIResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewACLServiceClient(cc).WhoAmI(ctx, &relv1.WhoAmIRequest{}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().whoAmI(toWhoAmIJSON(resp))
		}),
	}
}

func (r *runner) listACLTokens(ctx context.Context) ([]*relv1.ACLToken, error) {
	var resp *relv1.ListACLTokensResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewACLServiceClient(cc).ListTokens(ctx, &relv1.ListACLTokensRequest{}, opts...)
		return err
	})
	return resp.GetTokens(), err
}

// ttlSeconds turns a --ttl into whole seconds, rounding up: a TTL of 1.5s
// must not become 1s, and 0 stays 0.
func ttlSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := math.Ceil(d.Seconds())
	return int64(s)
}

// checkOutFile checks an --out FILE before the server is asked for a secret
// that is shown only once: it must not exist, and its directory must.
func checkOutFile(path string) error {
	if path == "" {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return usagef("--out %s already exists: relctl never overwrites a file; move it away or choose another --out", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return usagef("--out %s: %v", path, unwrapPath(err))
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return usagef("--out %s: directory %s: %v", path, dir, unwrapPath(err))
	case !fi.IsDir():
		return usagef("--out %s: %s is not a directory", path, dir)
	}
	return nil
}

// printSecret hands print the secret to show, or the file it was written
// to with --out. A secret is shown once: if the file cannot be written after
// all (it appeared meanwhile, the disk is full), the secret is printed
// instead of being lost, and the command still fails.
func (r *runner) printSecret(out, secret string, print func(secret, file string) error) error {
	if out == "" {
		return print(secret, "")
	}
	// No newline: whatever reads the file gets exactly the secret.
	werr := pki.WriteFile(out, []byte(secret), 0o600, true)
	if werr == nil {
		return print("", out)
	}
	if err := print(secret, ""); err != nil {
		return err
	}
	return fmt.Errorf("could not write the secret to --out %s (%v): it is printed above instead, keep it", out, werr)
}

package cli

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) releaseCommand() *cobra.Command {
	return noun("release",
		"Create, list and show releases",
		`A release is one immutable, verifiable build of an app: an artifact URL and
the sha256 of its bytes, with optional notes, source commit and labels.
Releases cannot be changed once created.`,
		`  relctl release create web 1.2.3 --artifact https://ci.example.com/web-1.2.3.tar.gz --sha256 9f86d08...
  relctl release list web
  relctl release show web@1.2.3`,
		r.releaseCreateCommand(),
		r.releaseListCommand(),
		r.releaseShowCommand(),
	)
}

func (r *runner) releaseCreateCommand() *cobra.Command {
	var (
		artifact, sha256, notes, commit string
		labels                          []string
	)
	cmd := &cobra.Command{
		Use:   "create APP VERSION --artifact URL --sha256 HEX",
		Short: "Create a release of an app",
		Long: `Create release VERSION of APP. Agents fetch the artifact from --artifact
(https://, http:// or file://) and check it against --sha256, the lower-case
hex sha256 of its bytes.

--notes takes the notes as text, or @FILE to read them from FILE (at most
64 KiB of UTF-8), @- to read them from stdin; @@ starts literal text with @.
--label is repeatable and also takes comma-separated KEY=VALUE lists.
relctl only checks the syntax; the server validates every field.`,
		Example: `  relctl release create web 1.2.3 \
      --artifact https://ci.example.com/web-1.2.3.tar.gz \
      --sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 \
      --commit 4f2a9c1 --notes @CHANGELOG-1.2.3.md --label team=web,channel=stable
  git log -1 --format=%B | relctl release create web 1.2.4 --artifact file:///srv/web-1.2.4.tar.gz --sha256 ... --notes @-`,
		Args:              exactArgs("APP", "VERSION"),
		ValidArgsFunction: r.completeFirstApp,
		RunE: r.do(func(ctx context.Context, args []string) error {
			lbls, err := parseKeyValues("label", labels)
			if err != nil {
				return err
			}
			text, err := readNotes(notes, r.stdin)
			if err != nil {
				return err
			}
			var resp *relv1.CreateReleaseResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).CreateRelease(ctx, &relv1.CreateReleaseRequest{
					App:         args[0],
					Version:     args[1],
					ArtifactUrl: artifact,
					Sha256:      sha256,
					Notes:       text,
					Commit:      commit,
					Labels:      lbls,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			rel := resp.GetRelease()
			return r.printer().created("release", rel.GetApp()+"@"+rel.GetVersion(), resp.GetIndex(), toReleaseJSON(rel))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&artifact, "artifact", "", "`URL` agents fetch the artifact from (required)")
	f.StringVar(&sha256, "sha256", "", "lower-case `HEX` sha256 of the artifact bytes (required)")
	f.StringVar(&notes, "notes", "", "release notes as `TEXT`, @FILE or @- for stdin")
	f.StringVar(&commit, "commit", "", "source revision `SHA` the release was built from")
	f.StringArrayVar(&labels, "label", nil, "label `KEY=VALUE[,KEY=VALUE...]` (repeatable)")
	_ = cmd.MarkFlagRequired("artifact")
	_ = cmd.MarkFlagRequired("sha256")
	_ = cmd.RegisterFlagCompletionFunc("notes", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveDefault
	})
	return cmd
}

func (r *runner) releaseListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list [APP]",
		Aliases: []string{"ls"},
		Short:   "List releases, of all apps or of one",
		Long: `List releases, per app: versions that are not semantic versions first, in
creation order, then semantic versions in semantic order. With APP, only
that app's releases. The answer comes from the replica of the server asked;
add --consistent to read from the leader instead.`,
		Example: `  relctl release list
  relctl release list web -o json`,
		Args:              maxArgs("APP"),
		ValidArgsFunction: r.completeFirstApp,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app := ""
			if len(args) == 1 {
				app = args[0]
			}
			releases, err := r.listReleases(ctx, app)
			if err != nil {
				return err
			}
			return r.printer().releases(releases)
		}),
	}
}

func (r *runner) releaseShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show APP@VERSION",
		Short: "Show one release in full",
		Long: `Show every field of release VERSION of APP, notes included. The answer
comes from the replica of the server asked; add --consistent to read from
the leader instead.`,
		Example: `  relctl release show web@1.2.3
  relctl release show web@1.2.3 -o json | jq -r .sha256`,
		Args: exactArgs("APP@VERSION"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			app, _, hasAt := strings.Cut(toComplete, "@")
			if !hasAt {
				// Complete the app first; NoSpace lets the user type "@".
				comps, dir := r.completeApp(cmd, toComplete)
				for i := range comps {
					comps[i] += "@"
				}
				return comps, dir | cobra.ShellCompDirectiveNoSpace
			}
			return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
				releases, err := r.listReleases(ctx, app)
				names := make([]string, 0, len(releases))
				for _, rel := range releases {
					names = append(names, rel.GetApp()+"@"+rel.GetVersion())
				}
				return names, err
			})
		},
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, err := parseAppVersion(args[0])
			if err != nil {
				return err
			}
			var resp *relv1.GetReleaseResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).GetRelease(ctx, &relv1.GetReleaseRequest{
					Read:    r.readOptions(),
					App:     app,
					Version: version,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().release(resp.GetRelease())
		}),
	}
}

func (r *runner) listReleases(ctx context.Context, app string) ([]*relv1.Release, error) {
	var resp *relv1.ListReleasesResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewControlServiceClient(cc).ListReleases(ctx,
			&relv1.ListReleasesRequest{Read: r.readOptions(), App: app}, opts...)
		return err
	})
	return resp.GetReleases(), err
}

// completeFirstApp completes an app name as the first argument and nothing
// after it.
func (r *runner) completeFirstApp(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return r.completeApp(cmd, toComplete)
}

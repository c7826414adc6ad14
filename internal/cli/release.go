package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) releaseCommand() *cobra.Command {
	return noun("release",
		"Create, list, show, promote, block and delete releases, and see where one may go",
		`A release is one immutable, verifiable build of an app: an artifact URL and
the sha256 of its bytes, with optional notes, source commit and labels.
Releases cannot be changed once created; one nothing needs any more can be
deleted.`,
		`  relctl release create web 1.2.3 --artifact ./web-1.2.3.tar.gz
  relctl release create web 1.2.3 --artifact https://ci.example.com/web-1.2.3.tar.gz --sha256 9f86d08...
  relctl release list web
  relctl release show web@1.2.3
  relctl release delete web@1.2.0
  relctl release notes web@1.2.3 --env prod`,
		r.releaseCreateCommand(),
		r.releaseListCommand(),
		r.releaseShowCommand(),
		r.releaseDeleteCommand(),
		r.releasePromoteCommand(),
		r.releaseStatusCommand(),
		r.releaseBlockCommand(true),
		r.releaseBlockCommand(false),
		r.releaseNotesCommand(),
	)
}

func (r *runner) releaseCreateCommand() *cobra.Command {
	var (
		artifact, sha256, notes, commit     string
		changelogFile, buildURL, commitTime string
		labels                              []string
		uploadTimeout                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create APP VERSION --artifact PATH|URL [--sha256 HEX]",
		Short: "Create a release of an app, uploading its artifact if it is a local file",
		Long: `Create release VERSION of APP.

--artifact is either a URL (https://, http:// or file://) that agents fetch
the artifact from, or the path of a local file: anything without "://" is a
path. For a URL, --sha256 is required: the lower-case hex sha256 of the
artifact's bytes, which agents check.

For a local file, relctl computes its sha256 and size (reading it twice,
never holding it in memory), uploads it to the cluster's artifact store, and
creates the release with the rel://sha256/<hex> URL the server answers.
--sha256 is optional then; when given, it must match the file, or relctl
stops before uploading anything (exit code 1). A missing file, a directory
or anything but a regular file is a usage error (exit code 2). The upload has
its own deadline, --upload-timeout (default 10m), instead of --timeout,
which then applies afresh to creating the release. On a terminal, progress is
drawn on stderr; otherwise relctl uploads silently.

A server already receiving its --max-concurrent-uploads refuses the upload
as busy; relctl tries again after a growing, jittered pause (up to 8s) until
--upload-timeout, then prints the server's refusal (exit code 1). A refusal
because the cluster's artifact store is at its --artifact-quota is not
retried: delete releases you no longer need (their artifacts are removed
after the servers' --artifact-grace) or ask for a larger quota. An artifact
no release uses is removed after that grace: create the release soon after
uploading, or upload again.

--notes takes the notes as text, or @FILE to read them from FILE (at most
64 KiB of UTF-8), @- to read them from stdin; @@ starts literal text with @.
--label is repeatable and also takes comma-separated KEY=VALUE lists.
relctl only checks the syntax; the server validates every field.

For release notes ('relctl release notes'): --changelog-file reads what
changed from a file (- for stdin; at most 64 KiB of UTF-8, refused past
it), --build-url links the build that made the artifact (http or https
only), and --commit-time gives when the commit was made (RFC 3339, not in
the future): the report's lead time counts from it.`,
		Example: `  # upload a build and release it
  relctl release create web 1.2.3 --artifact ./dist/web-1.2.3.tar.gz --commit 4f2a9c1

  # the same, refusing to upload anything but the expected bytes
  relctl release create web 1.2.3 --artifact ./dist/web-1.2.3.tar.gz \
      --sha256 "$(sha256sum dist/web-1.2.3.tar.gz | cut -d' ' -f1)" --upload-timeout 30m

  # an artifact agents download from elsewhere
  relctl release create web 1.2.3 \
      --artifact https://ci.example.com/web-1.2.3.tar.gz \
      --sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 \
      --commit 4f2a9c1 --notes @CHANGELOG-1.2.3.md --label team=web,channel=stable \
      --changelog-file CHANGES-1.2.3.md --build-url https://ci.example.com/builds/812 \
      --commit-time "$(git log -1 --format=%cI)"
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
			changelog, err := readChangelog(changelogFile, r.stdin)
			if err != nil {
				return err
			}
			committed, err := parseCommitTime(commitTime)
			if err != nil {
				return err
			}
			if uploadTimeout <= 0 {
				return usagef("invalid --upload-timeout %s: must be positive", uploadTimeout)
			}
			local := isLocalArtifact(artifact)
			if !local && sha256 == "" {
				return usagef("--sha256 is required when --artifact is a URL (it is optional only for a local file)")
			}

			req := &relv1.CreateReleaseRequest{
				App:            args[0],
				Version:        args[1],
				ArtifactUrl:    artifact,
				Sha256:         sha256,
				Notes:          text,
				Commit:         commit,
				Labels:         lbls,
				Changelog:      changelog,
				BuildUrl:       buildURL,
				CommitUnixNano: committed,
			}
			var uploaded *relv1.UploadResponse
			if local {
				if uploaded, err = r.uploadArtifact(artifact, sha256, uploadTimeout); err != nil {
					return err
				}
				// CreateReleaseRequest has no size field: the server knows
				// the size of what it stores under the rel:// URL.
				req.ArtifactUrl, req.Sha256 = uploaded.GetArtifactUrl(), uploaded.GetSha256()
				// The upload may have used up the command's --timeout;
				// creating the release gets a full one.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(context.Background(), r.timeout)
				defer cancel()
			}

			var resp *relv1.CreateReleaseResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).CreateRelease(ctx, req, opts...)
				return err
			})
			if err != nil {
				return err
			}
			rel, p := resp.GetRelease(), r.printer()
			if uploaded != nil && !p.json() {
				if _, err := fmt.Fprintf(p.w, "uploaded %s (%s) as %s\n", cell(filepath.Base(artifact)),
					humanBytes(uint64(uploaded.GetSize())), cell(uploaded.GetArtifactUrl())); err != nil {
					return err
				}
			}
			return p.created("release", rel.GetApp()+"@"+rel.GetVersion(), resp.GetIndex(), toReleaseJSON(rel))
		}),
	}
	f := cmd.Flags()
	f.StringVar(&artifact, "artifact", "", "`PATH|URL`: a local file to upload, or the URL agents fetch the artifact from (required)")
	f.StringVar(&sha256, "sha256", "", "lower-case `HEX` sha256 of the artifact bytes (required for a URL)")
	f.StringVar(&notes, "notes", "", "release notes as `TEXT`, @FILE or @- for stdin")
	f.StringVar(&commit, "commit", "", "source revision `SHA` the release was built from")
	f.StringVar(&changelogFile, "changelog-file", "", "read the release's changelog from `FILE` (- for stdin; at most 64 KiB)")
	f.StringVar(&buildURL, "build-url", "", "`URL` (http or https) of the build that made the artifact")
	f.StringVar(&commitTime, "commit-time", "", "when the commit was made, `RFC3339` (e.g. 2026-11-27T10:00:00Z); lead time counts from it")
	f.StringArrayVar(&labels, "label", nil, "label `KEY=VALUE[,KEY=VALUE...]` (repeatable)")
	f.DurationVar(&uploadTimeout, "upload-timeout", defaultUploadTimeout, "time limit for uploading a local --artifact, busy servers' refusals retried within it")
	_ = cmd.MarkFlagRequired("artifact")
	_ = cmd.RegisterFlagCompletionFunc("notes", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveDefault
	})
	return cmd
}

// uploadArtifact hashes the local file at path, checks the digest against
// want (--sha256) when given, and uploads the file.
func (r *runner) uploadArtifact(path, want string, timeout time.Duration) (*relv1.UploadResponse, error) {
	if err := statArtifact(path); err != nil {
		return nil, err
	}
	prog := newProgress(r.stderr)
	digest, size, err := hashFile(path, prog)
	if err != nil {
		return nil, err
	}
	if want != "" && !strings.EqualFold(want, digest) {
		return nil, fmt.Errorf("--artifact %s has sha256 %s, but --sha256 is %s; nothing was uploaded", path, digest, want)
	}
	resp, err := r.upload(path, digest, size, timeout, prog)
	if err != nil {
		return nil, err
	}
	if resp.GetSha256() == "" {
		resp.Sha256 = digest
	}
	if resp.GetSize() == 0 {
		resp.Size = size
	}
	return resp, nil
}

func (r *runner) releaseListCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list [APP] [--limit N]",
		Aliases: []string{"ls"},
		Short:   "List releases, of all apps or of one",
		Long: `List releases, per app: versions that are not semantic versions first, in
creation order, then semantic versions in semantic order. With APP, only
that app's releases. The server answers in pages, which relctl follows;
--limit stops after N releases. The answer comes from the replica of the
server asked; add --consistent to read from the leader instead.`,
		Example: `  relctl release list
  relctl release list web -o json`,
		Args:              maxArgs("APP"),
		ValidArgsFunction: r.completeFirstApp,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app := ""
			if len(args) == 1 {
				app = args[0]
			}
			if err := checkLimit(limit); err != nil {
				return err
			}
			releases, err := r.listReleases(ctx, app, limit)
			if err != nil {
				return err
			}
			return r.printer().releases(releases)
		}),
	}
	limitFlag(cmd, &limit)
	return cmd
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
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
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

func (r *runner) releaseDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete APP@VERSION",
		Aliases: []string{"rm"},
		Short:   "Delete a release nothing needs any more",
		Long: `Delete release VERSION of APP. It is refused (the message says why and
what to do) while:

  * a host runs it, installs it, may fall back to it (the release it ran
    before its current one), or is told to run it;
  * an active rollout goes to it or takes hosts from it;
  * it is an environment's current release (its newest succeeded rollout);
  * 'relctl rollout rollback' of an environment's newest rollout would take
    hosts back to it.

Roll out another release first. The artifact itself is not deleted here;
the cluster's artifact store drops digests no release refers to. Needs the
manage-apps permission on APP. relctl sends every attempt with the same
request id, so a delete retried across a leader change acts once.`,
		Example: `  relctl release delete web@1.2.0
  relctl release delete web@1.2.0 -o json`,
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, err := parseAppVersion(args[0])
			if err != nil {
				return err
			}
			var resp *relv1.DeleteReleaseResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).DeleteRelease(ctx, &relv1.DeleteReleaseRequest{App: app, Version: version}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().releaseDeleted(app, version, resp.GetIndex())
		}),
	}
}

// listReleases lists releases (of app, if set), following the pages, at
// most limit of them (0: all).
func (r *runner) listReleases(ctx context.Context, app string, limit int) ([]*relv1.Release, error) {
	return allPages(limit, func(tok string, size uint32) ([]*relv1.Release, string, error) {
		var resp *relv1.ListReleasesResponse
		_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
			resp, err = relv1.NewControlServiceClient(cc).ListReleases(ctx,
				&relv1.ListReleasesRequest{Read: r.readOptions(), App: app, PageToken: tok, PageSize: size}, opts...)
			return err
		})
		return resp.GetReleases(), resp.GetNextPageToken(), err
	})
}

// completeFirstApp completes an app name as the first argument and nothing
// after it.
func (r *runner) completeFirstApp(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return r.completeApp(cmd, toComplete)
}

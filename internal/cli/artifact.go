package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) artifactCommand() *cobra.Command {
	return noun("artifact",
		"List the cluster's artifact store",
		`The cluster's artifact store holds the files uploaded with
'relctl release create --artifact PATH', named by their sha256, on every
server. An artifact that no release uses is removed from every server once
it is older than the servers' --artifact-grace (24h by default).`,
		`  relctl artifact list`,
		r.artifactListCommand(),
	)
}

func (r *runner) artifactListCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list [--limit N]",
		Aliases: []string{"ls"},
		Short:   "List the artifacts of a server's store, with the releases using them",
		Long: `List the artifacts in the store of the server asked (the first --addr that
answers): SHA256, SIZE, STORED (when that server stored its copy; the
garbage collector's grace counts from the leader's copy) and RELEASES
(app@version of every release using it). An artifact with no release is
removed after --artifact-grace; REMOVED "yes" means a removal is under way
on this server. Servers' stores differ while copies are fetched or deleted.
The last line gives the store's size and its --artifact-quota. Artifacts
come by digest, in pages; --limit stops after N.`,
		Example: `  relctl artifact list
  relctl artifact list -o json | jq -r '.artifacts[] | select(.releases | length == 0) | .sha256'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if err := checkLimit(limit); err != nil {
				return err
			}
			var last *relv1.ListArtifactsResponse
			list, err := allPages(limit, func(tok string, size uint32) ([]*relv1.ArtifactInfo, string, error) {
				_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
					last, err = relv1.NewArtifactServiceClient(cc).ListArtifacts(ctx,
						&relv1.ListArtifactsRequest{PageToken: tok, PageSize: size}, opts...)
					return err
				})
				return last.GetArtifacts(), last.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			return r.printer().artifacts(last, list)
		}),
	}
	limitFlag(cmd, &limit)
	return cmd
}

type artifactJSON struct {
	SHA256   string   `json:"sha256"`
	Size     int64    `json:"size"`
	StoredAt string   `json:"stored_at"`
	Releases []string `json:"releases"`
	Removed  bool     `json:"removed"`
}

// artifacts prints a store's artifacts; resp is the last page's answer,
// for the server and its store's size.
func (p printer) artifacts(resp *relv1.ListArtifactsResponse, list []*relv1.ArtifactInfo) error {
	if p.json() {
		out := struct {
			Server     string         `json:"server"`
			StoreBytes int64          `json:"store_bytes"`
			QuotaBytes int64          `json:"quota_bytes"`
			Artifacts  []artifactJSON `json:"artifacts"`
		}{Server: resp.GetServerId(), StoreBytes: resp.GetStoreBytes(), QuotaBytes: resp.GetQuotaBytes(), Artifacts: []artifactJSON{}}
		for _, a := range list {
			out.Artifacts = append(out.Artifacts, artifactJSON{SHA256: a.GetSha256(), Size: a.GetSize(),
				StoredAt: formatTime(a.GetStoredUnixNano(), time.RFC3339), Releases: append([]string{}, a.GetReleases()...), Removed: a.GetRemoved()})
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(list))
	for _, a := range list {
		rows = append(rows, []string{a.GetSha256(), humanBytes(uint64(max(a.GetSize(), 0))), p.ago(a.GetStoredUnixNano()),
			strings.Join(a.GetReleases(), ","), yesNo(a.GetRemoved())})
	}
	if err := p.table([]string{"SHA256", "SIZE", "STORED", "RELEASES", "REMOVED"}, rows); err != nil {
		return err
	}
	quota := "no --artifact-quota"
	if q := resp.GetQuotaBytes(); q > 0 {
		quota = fmt.Sprintf("of its --artifact-quota %s", humanBytes(uint64(q)))
	}
	_, err := fmt.Fprintf(p.w, "%s: %s stored, %s\n", resp.GetServerId(), humanBytes(uint64(max(resp.GetStoreBytes(), 0))), quota)
	return err
}

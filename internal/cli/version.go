package cli

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/version"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client and server versions",
		Long: `Print relctl's version and, when a server answers within --timeout, the id
and version of the server that answered. An unreachable server is reported
in the output, not as a failure: the command still exits 0, so it can be
used to check the client alone, even without --ca-file.`,
		Example: `  relctl version
  relctl version -o json
  relctl --addr 10.0.0.2:7400 version`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.doLocal(func(ctx context.Context, _ []string) error {
			out := versionJSON{ClientVersion: version.Version}
			var resp *relv1.StatusResponse
			addr, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewClusterServiceClient(cc).Status(ctx, &relv1.StatusRequest{}, opts...)
				return err
			})
			if err == nil {
				out.Server = &serverVersionJSON{ID: resp.GetId(), Version: resp.GetVersion(), Address: addr}
			} else {
				out.ServerError = serverError(err)
			}
			return r.printer().version(out)
		}),
	}
}

// serverError says why version has no server to report. Not reaching one is
// called that; a server that answered with an error is quoted like any
// other failure.
func serverError(err error) string {
	var (
		ur *unreachableError
		te *timeoutError
		ue *usageError
	)
	_, msg := describeError(err, "relctl version", false)
	switch {
	case errors.As(err, &ue):
		return "not asked: " + ue.Error()
	case errors.As(err, &ur) || errors.As(err, &te):
		return "unreachable: " + msg
	}
	return "error: " + msg
}

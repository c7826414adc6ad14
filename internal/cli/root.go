// Package cli implements relctl, the command line client of Rel's control
// plane. Main runs one command in-process and returns its exit code, so tests
// drive the real command tree without building a binary.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

const (
	defaultAddr    = "127.0.0.1:7400"
	defaultTimeout = 10 * time.Second

	envAddr   = "REL_ADDR"
	envOutput = "REL_OUTPUT"
)

// Main runs relctl with args (without the program name) and returns the exit
// code. Every failure is reported as exactly one "relctl: ..." line on stderr.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(args, os.LookupEnv, stdin, stdout, stderr)
}

// run is Main with the environment injected, so tests can set REL_ADDR and
// REL_OUTPUT without touching the process environment.
func run(args []string, lookupEnv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	r := &runner{lookupEnv: lookupEnv, stdin: stdin, stdout: stdout, stderr: stderr}
	defer r.cancel()

	root := r.rootCommand()
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if args == nil {
		// cobra reads os.Args when given nil, which is never what an
		// in-process caller means.
		args = []string{}
	}
	root.SetArgs(args)

	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	if cmd == nil {
		cmd = root
	}
	code, msg := describeError(err, cmd.CommandPath(), !r.started)
	fmt.Fprintf(stderr, "relctl: %s\n", msg)
	return code
}

// runner holds one invocation's flags, resolved settings and I/O.
type runner struct {
	lookupEnv func(string) (string, bool)
	stdin     io.Reader
	stdout    io.Writer
	// stderr is only written to directly for progress, and only when it is
	// a terminal; errors go through run's single "relctl: ..." line.
	stderr io.Writer

	// Raw persistent flag values; resolve turns them into the fields below.
	addrFlag      string
	outputFlag    string
	timeoutFlag   time.Duration
	consistent    bool
	caFileFlag    string
	certFileFlag  string
	keyFileFlag   string
	tokenFileFlag string

	addrs   []string
	output  string
	timeout time.Duration
	secure  securitySettings

	// sec is the loaded TLS material and token (see security), or secErr
	// why it could not be loaded; both are set on first use.
	sec    *security
	secErr error

	ctx        context.Context
	cancelFunc context.CancelFunc

	// started is set once a command's RunE begins: errors before that come
	// from parsing the command line and are usage errors.
	started bool
}

func (r *runner) cancel() {
	if r.cancelFunc != nil {
		r.cancelFunc()
	}
}

// resolve applies precedence to the global settings: a flag given on the
// command line wins over the environment, which wins over the default.
func (r *runner) resolve(cmd *cobra.Command) error {
	flags := cmd.Flags()

	addr, addrSource := r.addrFlag, "--addr"
	if v, ok := r.lookupEnv(envAddr); ok && v != "" && !flags.Changed("addr") {
		addr, addrSource = v, envAddr
	}
	addrs, err := parseAddrs(addrSource, addr)
	if err != nil {
		return err
	}

	output, outputSource := r.outputFlag, "--output"
	if v, ok := r.lookupEnv(envOutput); ok && v != "" && !flags.Changed("output") {
		output, outputSource = v, envOutput
	}
	if extra := cmd.Annotations[annotationFormats]; output != formatTable && output != formatJSON && !slices.Contains(strings.Split(extra, ","), output) {
		if extra != "" {
			all := append([]string{formatTable, formatJSON}, strings.Split(extra, ",")...)
			return usagef("invalid %s %q: want %s or %s", outputSource, output, strings.Join(all[:len(all)-1], ", "), all[len(all)-1])
		}
		return usagef("invalid %s %q: want %s or %s", outputSource, output, formatTable, formatJSON)
	}

	if r.timeoutFlag <= 0 {
		return usagef("invalid --timeout %s: must be positive", r.timeoutFlag)
	}

	r.addrs, r.output, r.timeout = addrs, output, r.timeoutFlag
	r.secure = securitySettings{
		ca:        r.resolveSetting(cmd, "ca-file", r.caFileFlag, envCAFile),
		cert:      r.resolveSetting(cmd, "cert-file", r.certFileFlag, envCertFile),
		key:       r.resolveSetting(cmd, "key-file", r.keyFileFlag, envKeyFile),
		tokenFile: r.resolveSetting(cmd, "token-file", r.tokenFileFlag, envTokenFile),
	}
	if v, ok := r.lookupEnv(envToken); ok {
		r.secure.token = v
	}
	return nil
}

// resolveSetting resolves a global setting without a default: the flag if
// given on the command line, else the environment variable, else nothing.
func (r *runner) resolveSetting(cmd *cobra.Command, flag, value, env string) setting {
	if cmd.Flags().Changed(flag) {
		return setting{value: value, source: "--" + flag}
	}
	if v, ok := r.lookupEnv(env); ok && v != "" {
		return setting{value: v, source: env}
	}
	return setting{}
}

// security loads the TLS material and token the first time a command needs
// them (see loadSecurity).
func (r *runner) security() (*security, error) {
	if r.sec == nil && r.secErr == nil {
		r.sec, r.secErr = loadSecurity(r.secure, time.Now())
	}
	return r.sec, r.secErr
}

func (r *runner) printer() printer { return printer{w: r.stdout, format: r.output, now: time.Now()} }

// do wraps the body of a command that talks to a server: it marks the
// command as started (see runner.started), loads the TLS material and token
// before the command does anything, and hands it the command-wide context.
func (r *runner) do(fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		r.started = true
		if _, err := r.security(); err != nil {
			return err
		}
		return fn(r.ctx, args)
	}
}

// doLocal is do for a command that needs no server (tls ...), or that
// reports a server it cannot reach in its output (version): it loads no
// TLS material up front.
func (r *runner) doLocal(fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(_ *cobra.Command, args []string) error {
		r.started = true
		return fn(r.ctx, args)
	}
}

// call runs one RPC with failover across r.addrs (see invoke).
func (r *runner) call(ctx context.Context, c rpc) (string, error) {
	return r.invoke(ctx, r.timeout, c)
}

// invoke is call with its own timeout for messages (uploads).
func (r *runner) invoke(ctx context.Context, timeout time.Duration, c rpc) (string, error) {
	sec, err := r.security()
	if err != nil {
		return "", err
	}
	return invoke(ctx, sec, r.addrs, timeout, c)
}

func (r *runner) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "relctl",
		Short: "Manage apps, environments, releases and rollouts in Rel",
		Long: `relctl is the command line client of Rel's control plane. It talks gRPC to
any rel-server of the cluster: writes are forwarded to the leader, reads are
served by the server asked unless --consistent is given.

Global settings come from flags, then environment variables, then defaults:
  --addr        REL_ADDR        default ` + defaultAddr + `
  --output      REL_OUTPUT      default table
  --timeout                     default ` + defaultTimeout.String() + ` (the whole command; uploads have
                                their own --upload-timeout, and "rollout status
                                --watch" applies it to each request)
  --ca-file     REL_CA_FILE     the cluster's CA certificate bundle (PEM);
                                required by every command that talks to a server
  --cert-file   REL_CERT_FILE   a client certificate with a role (relctl tls cert
  --key-file    REL_KEY_FILE    create --client) and its key (mode 0600); both
                                or neither
  --token-file  REL_TOKEN_FILE  a file holding an operator token
                REL_TOKEN       the token itself; a token file (flag or
                                REL_TOKEN_FILE) wins over it

--addr takes a comma-separated list. relctl tries the addresses in order and
moves to the next when one cannot be reached (or its TLS handshake fails)
or answers Unavailable (no leader yet, a leader change, a server shutting
down); while servers answer Unavailable it goes through the list again,
after a pause, until --timeout. Any other answer, even an error, is final.
Every attempt of a request carries the same request id (rel-request-id),
so the cluster applies a write once however often it is sent, and answers
a repeat with the first answer.

Every connection is TLS. relctl reads the cluster's name from the CA
certificate and accepts only a server whose certificate names
server.<cluster>.rel and is signed by that CA. You prove who you are with a
client certificate, an operator token, or both (the token then decides);
without either, only "acl bootstrap" and "acl whoami" are answered.
"rel-server --dev" prints the export lines that set all of this up.

Every failure prints one line, "relctl: <message>", on stderr.

` + exitCodeHelp,
		Example: `  relctl app create web --description "Public website"
  relctl release create web 1.2.3 --artifact ./web-1.2.3.tar.gz
  relctl rollout start web@1.2.3 --env prod
  relctl --addr 10.0.0.1:7400,10.0.0.2:7400 release list web
  REL_OUTPUT=json relctl cluster members
  export REL_CA_FILE=/etc/rel/ca.pem REL_TOKEN_FILE=~/.rel-token
  relctl --cert-file alice.pem --key-file alice-key.pem acl whoami`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Cobra's unknown-command error adds multi-line suggestions; noArgs
		// reports the same on one line.
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := r.resolve(cmd); err != nil {
				return err
			}
			r.ctx, r.cancelFunc = context.WithTimeout(context.Background(), r.timeout)
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	pf := root.PersistentFlags()
	pf.StringVar(&r.addrFlag, "addr", defaultAddr, "server addresses `HOST:PORT[,HOST:PORT...]`, tried in order ($"+envAddr+")")
	pf.StringVarP(&r.outputFlag, "output", "o", formatTable, "output `FORMAT`: table or json ($"+envOutput+")")
	pf.DurationVar(&r.timeoutFlag, "timeout", defaultTimeout, "time limit for the whole command")
	pf.BoolVar(&r.consistent, "consistent", false, "read from the leader after it confirms its leadership, not from a possibly stale replica")
	pf.StringVar(&r.caFileFlag, "ca-file", "", "the cluster's CA certificate bundle `FILE` (PEM), to check the servers ($"+envCAFile+")")
	pf.StringVar(&r.certFileFlag, "cert-file", "", "client certificate `FILE` (PEM) naming you and your role ($"+envCertFile+")")
	pf.StringVar(&r.keyFileFlag, "key-file", "", "the client certificate's key `FILE`, not readable by group or others ($"+envKeyFile+")")
	pf.StringVar(&r.tokenFileFlag, "token-file", "", "`FILE` holding an operator token; wins over $"+envToken+" ($"+envTokenFile+")")
	for _, f := range []string{"ca-file", "cert-file", "key-file", "token-file"} {
		_ = root.MarkPersistentFlagFilename(f)
	}
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{formatTable, formatJSON}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		r.appCommand(),
		r.lifecycleCommand(),
		r.envCommand(),
		r.releaseCommand(),
		r.artifactCommand(),
		r.rolloutCommand(),
		r.approvalsCommand(),
		r.reviewsCommand(),
		r.freezeCommand(),
		r.agentCommand(),
		r.historyCommand(),
		r.auditCommand(),
		r.reportCommand(),
		r.eventsCommand(),
		r.webhookCommand(),
		r.statusCommand(),
		r.clusterCommand(),
		r.aclCommand(),
		r.tlsCommand(),
		r.versionCommand(),
	)
	return root
}

// noun builds a command that only groups subcommands ("app", "env", ...).
// Without a RunE cobra would print help and exit 0 for "relctl app lst";
// with noArgs the typo is a usage error.
func noun(use, short, long, example string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(subs...)
	return c
}

// noArgs rejects arguments to a command that only has subcommands, with a
// one-line suggestion when the argument looks like a misspelt subcommand.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		// SuggestionsFor, unlike cobra's own error path, has no default.
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usagef("%s", msg)
}

// exactArgs requires exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s takes %s, got %d argument%s", cmd.CommandPath(), describeArgs(names), len(args), plural(len(args)))
		}
		return nil
	}
}

// maxArgs allows up to len(names) positional arguments.
func maxArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > len(names) {
			return usagef("%s takes at most %s, got %d arguments", cmd.CommandPath(), describeArgs(names), len(args))
		}
		return nil
	}
}

func describeArgs(names []string) string {
	if len(names) == 0 {
		return "no arguments"
	}
	return fmt.Sprintf("%d argument%s (%s)", len(names), plural(len(names)), strings.Join(names, " "))
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// completionTimeout caps dynamic shell completion: a shell waiting on a slow
// or unreachable server for the full --timeout feels hung.
const completionTimeout = 2 * time.Second

// complete runs list for dynamic shell completion and keeps the suggestions
// starting with toComplete. Completion runs without PersistentPreRunE, so it
// resolves the global flags itself. Failures only mean no suggestions: an
// error printed into the middle of a command line helps nobody.
func (r *runner) complete(cmd *cobra.Command, toComplete string, list func(ctx context.Context) ([]string, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	if err := r.resolve(cmd); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(r.timeout, completionTimeout))
	defer cancel()
	names, err := list(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

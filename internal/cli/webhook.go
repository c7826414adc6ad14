package cli

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/event"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// maxWebhookFile bounds --secret-file and --ca-file.
const maxWebhookFile = 256 << 10

func (r *runner) webhookCommand() *cobra.Command {
	return noun("webhook",
		"Send the cluster's events to URLs (chat, incident tools, your own services)",
		`A webhook POSTs each event whose type matches its globs (see 'relctl
events --help' for the types) to a URL, one at a time in event order, from
the leader. Each request carries:
  Rel-Delivery: NAME-SEQ     the same for every attempt: dedupe on it
  Rel-Event: TYPE
  Rel-Signature: t=UNIX,v1=HEX   HMAC-SHA256 with the secret of "UNIX.BODY"
                             (Stripe's scheme; only with --secret-file)
A delivery that is not answered 2xx within 10 s is retried with a growing,
jittered pause for up to 24 h; then the event goes to the webhook's dead
letters ('webhook dead-letters', 'webhook redeliver') and delivery goes on
with the next event. The leader records each delivery in raft, so a new
leader goes on where the old one stopped; a leader that dies between the
receiver's 2xx and that record makes the next leader send the event again,
with the same Rel-Delivery id.

Creating, deleting and redelivering need the operator or admin role; any
reader may list webhooks and their deliveries. No answer shows a secret.`,
		`  relctl webhook create chat --url https://hooks.slack.com/services/T0/B0/XX --events 'rollout.*,host.failed' --format slack
  relctl webhook create deploys --url https://ci.example.com/rel --events 'release.*,rollout.succeeded' --secret-file whsec.txt
  relctl webhook list
  relctl webhook deliveries deploys
  relctl webhook dead-letters deploys
  relctl webhook redeliver deploys 1041`,
		r.webhookCreateCommand(),
		r.webhookListCommand(),
		r.webhookDeleteCommand(),
		r.webhookDeliveriesCommand(),
		r.webhookDeadLettersCommand(),
		r.webhookRedeliverCommand(),
	)
}

// readWebhookFile reads a --secret-file or --ca-file, bounded; a secret
// file must not be readable by group or others, like key files.
func readWebhookFile(flag, path string, secret bool) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, usagef("%s %s: %v", flag, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, usagef("%s %s is not a regular file", flag, path)
	}
	if fi.Size() > maxWebhookFile {
		return nil, usagef("%s %s is %d bytes, at most %d", flag, path, fi.Size(), maxWebhookFile)
	}
	if secret && fi.Mode().Perm()&0o077 != 0 {
		return nil, usagef("%s %s may be read by group or others (mode %04o): chmod 600 it", flag, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("%s %s: %v", flag, path, err)
	}
	if secret {
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) == 0 {
			return nil, usagef("%s %s is empty", flag, path)
		}
	}
	return b, nil
}

func (r *runner) webhookCreateCommand() *cobra.Command {
	var url, events, format, secretFile, caFile string
	cmd := &cobra.Command{
		Use:   "create NAME --url URL --events GLOBS [--format json|slack] [--secret-file F] [--ca-file F]",
		Short: "Create a webhook",
		Long: `Create webhook NAME: from now on, every event whose type matches one of
--events (comma-separated globs: 'rollout.*,release.*') is POSTed to --url
(http or https; https verified with the system's roots, or --ca-file's).

--format json (default) sends {"delivery": "NAME-SEQ", "webhook": NAME,
"event": {seq, index, time, type, app, env, rollout_id, version, agent_id,
wave, actor, message}}; --format slack sends {"text": "[rel] TYPE
APP@VERSION in ENV: MESSAGE (by WHO)"}, which Slack's and Mattermost's
incoming webhooks show as a line.

--secret-file (mode 0600; its trailing newline dropped) holds the key of
Rel-Signature; without it deliveries are not signed. The secret is stored
in the cluster's replicated state as given and never shown again.`,
		Example: `  relctl webhook create chat --url https://hooks.slack.com/services/T0/B0/XX --events 'rollout.*,host.failed' --format slack
  relctl webhook create deploys --url https://ci.example.com/rel --events 'release.*,rollout.succeeded' --secret-file whsec.txt`,
		Args: exactArgs("NAME"),
		RunE: r.do(func(ctx context.Context, args []string) error {
			if url == "" {
				return usagef("--url is required: the http(s) URL events are POSTed to")
			}
			if events == "" {
				return usagef("--events is required: the types to send, as globs, e.g. 'rollout.*,release.*'")
			}
			if _, err := event.ParseTypes(events); err != nil {
				return usagef("invalid --events: %v", err)
			}
			if format != "json" && format != "slack" {
				return usagef("invalid --format %q: want json or slack", format)
			}
			req := &relv1.CreateWebhookRequest{Name: args[0], Url: url, Events: events, Format: format}
			if secretFile != "" {
				b, err := readWebhookFile("--secret-file", secretFile, true)
				if err != nil {
					return err
				}
				req.Secret = b
			}
			if caFile != "" {
				b, err := readWebhookFile("--ca-file", caFile, false)
				if err != nil {
					return err
				}
				req.CaPem = string(b)
			}
			var resp *relv1.CreateWebhookResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewWebhookServiceClient(cc).CreateWebhook(ctx, req, opts...)
				return err
			})
			if err != nil {
				return err
			}
			p := r.printer()
			if p.json() {
				return p.writeJSON(webhookToJSON(resp.GetWebhook()))
			}
			_, err = fmt.Fprintf(r.stdout, "created webhook %s (index %d): %s events after seq %d to %s\n", resp.GetWebhook().GetName(), resp.GetIndex(),
				strings.Join(resp.GetWebhook().GetEvents(), ","), resp.GetWebhook().GetDeliveredSeq(), resp.GetWebhook().GetUrl())
			return err
		}),
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "", "the http(s) `URL` to POST events to (required)")
	f.StringVar(&events, "events", "", "the event types to send, comma-separated `GLOBS` ('rollout.*,release.*'; required)")
	f.StringVar(&format, "format", "json", "body `FORMAT`: json or slack")
	f.StringVar(&secretFile, "secret-file", "", "`FILE` (mode 0600) holding the signing secret")
	f.StringVar(&caFile, "ca-file", "", "PEM `FILE` of the CAs to verify an https receiver with, instead of the system's")
	_ = cmd.MarkFlagFilename("secret-file")
	_ = cmd.MarkFlagFilename("ca-file")
	return cmd
}

func (r *runner) listWebhooks(ctx context.Context) ([]*relv1.Webhook, error) {
	var resp *relv1.ListWebhooksResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewWebhookServiceClient(cc).ListWebhooks(ctx, &relv1.ListWebhooksRequest{Read: r.readOptions()}, opts...)
		return err
	})
	return resp.GetWebhooks(), err
}

func (r *runner) getWebhook(ctx context.Context, name string) (*relv1.GetWebhookResponse, error) {
	var resp *relv1.GetWebhookResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewWebhookServiceClient(cc).GetWebhook(ctx, &relv1.GetWebhookRequest{Read: r.readOptions(), Name: name}, opts...)
		return err
	})
	return resp, err
}

func (r *runner) completeWebhook(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		whs, err := r.listWebhooks(ctx)
		names := make([]string, 0, len(whs))
		for _, w := range whs {
			names = append(names, w.GetName())
		}
		return names, err
	})
}

func (r *runner) webhookListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List webhooks with their delivery progress",
		Long: `List the webhooks: URL, event globs, format, whether they sign, the seq
delivered up to, and counts of deliveries, failed attempts and dead letters.`,
		Example: `  relctl webhook list
  relctl webhook list -o json`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			whs, err := r.listWebhooks(ctx)
			if err != nil {
				return err
			}
			p := r.printer()
			if p.json() {
				out := struct {
					Webhooks []webhookJSON `json:"webhooks"`
				}{Webhooks: []webhookJSON{}}
				for _, w := range whs {
					out.Webhooks = append(out.Webhooks, webhookToJSON(w))
				}
				return p.writeJSON(out)
			}
			rows := make([][]string, 0, len(whs))
			for _, w := range whs {
				signed := "no"
				if w.GetHasSecret() {
					signed = "yes"
				}
				rows = append(rows, []string{w.GetName(), w.GetUrl(), strings.Join(w.GetEvents(), ","), w.GetFormat(), signed,
					strconv.FormatUint(w.GetDeliveredSeq(), 10), strconv.FormatUint(w.GetDelivered(), 10),
					strconv.FormatUint(w.GetFailedAttempts(), 10), strconv.FormatUint(w.GetDeadLettered(), 10)})
			}
			return p.table([]string{"NAME", "URL", "EVENTS", "FORMAT", "SIGNED", "UP TO SEQ", "DELIVERED", "FAILED ATTEMPTS", "DEAD"}, rows)
		}),
	}
}

func (r *runner) webhookDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a webhook and its dead letters",
		Long:              `Delete webhook NAME: the leader stops delivering to it at once (a request in flight may still arrive). Needs the operator or admin role.`,
		Example:           `  relctl webhook delete chat`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: r.completeWebhook,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.DeleteWebhookResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewWebhookServiceClient(cc).DeleteWebhook(ctx, &relv1.DeleteWebhookRequest{Name: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(r.stdout, "deleted webhook %s (index %d)\n", args[0], resp.GetIndex())
			return err
		}),
	}
}

func (r *runner) webhookDeliveriesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "deliveries NAME",
		Short: "Show a webhook's latest deliveries (the last 50)",
		Long: `Show webhook NAME's latest deliveries, oldest first: the event, the
outcome (delivered, dead_letter, redelivered), how many attempts it took,
the last HTTP status and error. Failed attempts that were retried and then
succeeded count in ATTEMPTS; 'webhook list' counts them all.`,
		Example:           `  relctl webhook deliveries deploys`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: r.completeWebhook,
		RunE: r.do(func(ctx context.Context, args []string) error {
			resp, err := r.getWebhook(ctx, args[0])
			if err != nil {
				return err
			}
			ds := resp.GetWebhook().GetRecent()
			p := r.printer()
			if p.json() {
				out := struct {
					Deliveries []deliveryJSON `json:"deliveries"`
				}{Deliveries: []deliveryJSON{}}
				for _, d := range ds {
					out.Deliveries = append(out.Deliveries, deliveryToJSON(d))
				}
				return p.writeJSON(out)
			}
			rows := make([][]string, 0, len(ds))
			for _, d := range ds {
				rows = append(rows, []string{strconv.FormatUint(d.GetSeq(), 10), d.GetType(), d.GetOutcome(), strconv.Itoa(int(d.GetAttempts())),
					statusText(d.GetStatus()), formatTime(d.GetDoneUnixNano(), time.RFC3339), d.GetError()})
			}
			return p.table([]string{"SEQ", "TYPE", "OUTCOME", "ATTEMPTS", "STATUS", "DONE", "ERROR"}, rows)
		}),
	}
}

func statusText(code int32) string {
	if code == 0 {
		return "-"
	}
	return strconv.Itoa(int(code))
}

func (r *runner) webhookDeadLettersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dead-letters NAME",
		Short: "Show the events a webhook gave up on",
		Long: `Show the events webhook NAME gave up on after retrying (24 h), with the
last status and error. 'relctl webhook redeliver NAME SEQ' sends one again.`,
		Example:           `  relctl webhook dead-letters deploys`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: r.completeWebhook,
		RunE: r.do(func(ctx context.Context, args []string) error {
			resp, err := r.getWebhook(ctx, args[0])
			if err != nil {
				return err
			}
			dls := resp.GetDeadLetters()
			p := r.printer()
			if p.json() {
				out := struct {
					DeadLetters []deadLetterJSON `json:"dead_letters"`
				}{DeadLetters: []deadLetterJSON{}}
				for _, d := range dls {
					out.DeadLetters = append(out.DeadLetters, deadLetterJSON{Seq: d.GetSeq(), Type: d.GetType(), Attempts: d.GetAttempts(), Status: d.GetStatus(),
						Error: d.GetError(), Dead: formatTime(d.GetDeadUnixNano(), time.RFC3339Nano), Redeliver: d.GetRedeliver()})
				}
				return p.writeJSON(out)
			}
			rows := make([][]string, 0, len(dls))
			for _, d := range dls {
				state := "dead"
				if d.GetRedeliver() {
					state = "redelivering"
				}
				rows = append(rows, []string{strconv.FormatUint(d.GetSeq(), 10), d.GetType(), strconv.Itoa(int(d.GetAttempts())), statusText(d.GetStatus()),
					formatTime(d.GetDeadUnixNano(), time.RFC3339), state, d.GetError()})
			}
			return p.table([]string{"SEQ", "TYPE", "ATTEMPTS", "STATUS", "GAVE UP", "STATE", "ERROR"}, rows)
		}),
	}
}

func (r *runner) webhookRedeliverCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "redeliver NAME SEQ",
		Short: "Send a dead letter again",
		Long: `Ask the leader to deliver dead letter SEQ of webhook NAME again, before
the next new event, with the same retries. Delivered, it leaves the dead
letters ('webhook deliveries' shows it as redelivered); not, it stays there.
Needs the operator or admin role.`,
		Example: `  relctl webhook redeliver deploys 1041`,
		Args:    exactArgs("NAME", "SEQ"),
		RunE: r.do(func(ctx context.Context, args []string) error {
			seq, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil || seq == 0 {
				return usagef("invalid SEQ %q: give the seq of a dead letter ('relctl webhook dead-letters %s' lists them)", args[1], args[0])
			}
			var resp *relv1.RedeliverWebhookResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewWebhookServiceClient(cc).RedeliverWebhook(ctx, &relv1.RedeliverWebhookRequest{Name: args[0], Seq: seq}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(r.stdout, "redelivering event %d to webhook %s (index %d)\n", seq, args[0], resp.GetIndex())
			return err
		}),
	}
}

type webhookJSON struct {
	Name           string     `json:"name"`
	URL            string     `json:"url"`
	Events         []string   `json:"events"`
	Format         string     `json:"format"`
	Signed         bool       `json:"signed"`
	CustomCA       bool       `json:"custom_ca"`
	DeliveredSeq   uint64     `json:"delivered_seq"`
	Delivered      uint64     `json:"delivered"`
	FailedAttempts uint64     `json:"failed_attempts"`
	DeadLettered   uint64     `json:"dead_lettered"`
	Created        string     `json:"created"`
	CreatedBy      *actorJSON `json:"created_by,omitempty"`
}

func webhookToJSON(w *relv1.Webhook) webhookJSON {
	out := webhookJSON{Name: w.GetName(), URL: w.GetUrl(), Events: w.GetEvents(), Format: w.GetFormat(), Signed: w.GetHasSecret(), CustomCA: w.GetCaPem() != "",
		DeliveredSeq: w.GetDeliveredSeq(), Delivered: w.GetDelivered(), FailedAttempts: w.GetFailedAttempts(), DeadLettered: w.GetDeadLettered(),
		Created: formatTime(w.GetCreatedUnixNano(), time.RFC3339Nano)}
	if a := w.GetCreatedBy(); a != nil {
		out.CreatedBy = &actorJSON{Kind: a.GetKind(), ID: a.GetId(), Name: a.GetName()}
	}
	return out
}

type deliveryJSON struct {
	Seq      uint64 `json:"seq"`
	Type     string `json:"type"`
	Outcome  string `json:"outcome"`
	Attempts uint32 `json:"attempts"`
	Status   int32  `json:"status"`
	Error    string `json:"error,omitempty"`
	First    string `json:"first_attempt"`
	Done     string `json:"done"`
}

func deliveryToJSON(d *relv1.WebhookDelivery) deliveryJSON {
	return deliveryJSON{Seq: d.GetSeq(), Type: d.GetType(), Outcome: d.GetOutcome(), Attempts: d.GetAttempts(), Status: d.GetStatus(), Error: d.GetError(),
		First: formatTime(d.GetFirstAttemptUnixNano(), time.RFC3339Nano), Done: formatTime(d.GetDoneUnixNano(), time.RFC3339Nano)}
}

type deadLetterJSON struct {
	Seq       uint64 `json:"seq"`
	Type      string `json:"type"`
	Attempts  uint32 `json:"attempts"`
	Status    int32  `json:"status"`
	Error     string `json:"error"`
	Dead      string `json:"gave_up"`
	Redeliver bool   `json:"redelivering"`
}

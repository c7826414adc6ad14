package validate

import (
	"net/url"
	"strings"

	"github.com/relhq/rel/internal/event"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// MaxTrimmedEvents bounds one event retention pass (a delete of that many
// rows applies in a few milliseconds on every replica).
const MaxTrimmedEvents = 5000

// eventCommand validates the event stream's commands; ok is false for
// any other kind.
func eventCommand(cmd *relv1.Command) (ok bool, err error) {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_TrimEvents:
		c := k.TrimEvents
		if n := c.GetMaxEvents(); n == 0 || n > MaxTrimmedEvents {
			return true, invalid("an event retention pass removes 1 to %d events, not %d", MaxTrimmedEvents, n)
		}
		if c.GetBeforeSeq() < 2 {
			return true, invalid("trim_events before seq %d removes nothing: give a seq above 1", c.GetBeforeSeq())
		}
		return true, positive("trim_events cutoff", c.GetCutoffUnixNano())
	}
	return webhookCommand(cmd)
}

// Webhook bounds.
const (
	MaxWebhookURLLen     = 2048
	MaxWebhookSecretLen  = 4096
	MaxWebhookCALen      = 256 << 10
	MaxWebhookEventGlobs = 32
	// MaxWebhookProgress bounds the deliveries and dead letters of one
	// progress entry.
	MaxWebhookProgress = 100
)

// WebhookURL checks a webhook's URL: absolute http or https with a host,
// no credentials in it (they would be shown by 'webhook list').
func WebhookURL(raw string) error {
	if raw == "" {
		return invalid("webhook URL is empty: give --url https://...")
	}
	if len(raw) > MaxWebhookURLLen {
		return invalid("webhook URL is %d bytes, at most %d", len(raw), MaxWebhookURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid("webhook URL %q does not parse: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return invalid("webhook URL %q: the scheme must be http or https, not %q", raw, u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return invalid("webhook URL %q has no host", raw)
	}
	if u.User != nil {
		return invalid("webhook URL %q carries credentials: put a secret in --secret-file instead (the URL is shown to readers)", raw)
	}
	return nil
}

// WebhookFormat checks a webhook's body format.
func WebhookFormat(f string) error {
	if f != "json" && f != "slack" {
		return invalid("webhook format %q: want json or slack", f)
	}
	return nil
}

func webhookCommand(cmd *relv1.Command) (ok bool, err error) {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateWebhook:
		wh := k.CreateWebhook.GetWebhook()
		if wh == nil {
			return true, invalid("create_webhook carries no webhook")
		}
		if err := Name("webhook name", wh.GetName()); err != nil {
			return true, err
		}
		if err := WebhookURL(wh.GetUrl()); err != nil {
			return true, err
		}
		if err := WebhookFormat(wh.GetFormat()); err != nil {
			return true, err
		}
		if n := len(wh.GetEvents()); n == 0 || n > MaxWebhookEventGlobs {
			return true, invalid("a webhook has 1 to %d event globs, not %d", MaxWebhookEventGlobs, n)
		}
		if _, err := event.ParseTypes(strings.Join(wh.GetEvents(), ",")); err != nil {
			return true, invalid("%v", err)
		}
		if len(wh.GetSecret()) > MaxWebhookSecretLen {
			return true, invalid("webhook secret is %d bytes, at most %d", len(wh.GetSecret()), MaxWebhookSecretLen)
		}
		if len(wh.GetCaPem()) > MaxWebhookCALen {
			return true, invalid("webhook CA bundle is %d bytes, at most %d", len(wh.GetCaPem()), MaxWebhookCALen)
		}
		return true, nil
	case *relv1.Command_DeleteWebhook:
		return true, Name("webhook name", k.DeleteWebhook.GetName())
	case *relv1.Command_RedeliverWebhook:
		if k.RedeliverWebhook.GetSeq() == 0 {
			return true, invalid("redeliver names no event seq")
		}
		return true, Name("webhook name", k.RedeliverWebhook.GetName())
	case *relv1.Command_WebhookProgress:
		p := k.WebhookProgress
		if len(p.GetDeliveries()) > MaxWebhookProgress || len(p.GetDeadLetters()) > MaxWebhookProgress || len(p.GetRedelivered()) > MaxWebhookProgress {
			return true, invalid("webhook progress carries more than %d items", MaxWebhookProgress)
		}
		return true, Name("webhook name", p.GetName())
	}
	return false, nil
}

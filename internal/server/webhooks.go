package server

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/event"
	"github.com/relhq/rel/internal/validate"
	"github.com/relhq/rel/internal/version"
	"github.com/relhq/rel/internal/webhook"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// webhookMetrics counts the leader's webhook deliveries.
type webhookMetrics struct {
	deliveries *prometheus.CounterVec
	duration   prometheus.Histogram
}

func newWebhookMetrics(register func(...prometheus.Collector)) *webhookMetrics {
	m := &webhookMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rel_webhook_deliveries_total",
			Help: "Webhook delivery outcomes on this server while it led: delivered (2xx), failed (one attempt; retried), dead_letter (retries given up).",
		}, []string{"webhook", "outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rel_webhook_delivery_duration_seconds",
			Help:    "Duration of webhook delivery attempts (one POST each).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
	}
	register(m.deliveries, m.duration)
	return m
}

func (m *webhookMetrics) observe(name, outcome string, d time.Duration) {
	m.deliveries.WithLabelValues(name, outcome).Inc()
	if d > 0 {
		m.duration.Observe(d.Seconds())
	}
}

// deliverWebhooks runs the webhook deliveries while this server leads.
// They are off the apply path: a slow or dead receiver holds only its own
// webhook's worker, and each delivery's record is one small entry.
func (s *Server) deliverWebhooks(ctx context.Context) {
	m := &webhook.Manager{
		Store: s.store, Apply: s.apply, Logger: s.logger.With("component", "webhooks"),
		Observe:  s.metrics.webhooks.observe,
		RetryFor: s.cfg.WebhookRetryFor, RetryBase: s.cfg.WebhookRetryBase,
		UserAgent: "rel-server/" + version.Version,
	}
	m.Run(ctx)
}

// webhookService manages webhooks. No answer carries a secret: a webhook
// says only whether it has one.
type webhookService struct {
	relv1.UnimplementedWebhookServiceServer
	s *Server
}

// publicWebhook is wh without its secret.
func publicWebhook(wh *relv1.Webhook) *relv1.Webhook {
	out := proto.Clone(wh).(*relv1.Webhook)
	out.HasSecret = len(out.GetSecret()) > 0
	out.Secret = nil
	return out
}

func (w *webhookService) CreateWebhook(ctx context.Context, req *relv1.CreateWebhookRequest) (*relv1.CreateWebhookResponse, error) {
	s := w.s
	if err := validate.Name("webhook name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.WebhookURL(req.GetUrl()); err != nil {
		return nil, toStatus(err)
	}
	format := req.GetFormat()
	if format == "" {
		format = "json"
	}
	if err := validate.WebhookFormat(format); err != nil {
		return nil, toStatus(err)
	}
	if strings.TrimSpace(req.GetEvents()) == "" {
		return nil, status.Error(codes.InvalidArgument, "no events given: give the types to deliver as globs, e.g. --events 'rollout.*,release.*'")
	}
	globs, err := event.ParseTypes(req.GetEvents())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetCaPem() != "" {
		if _, err := webhook.NewClient(req.GetCaPem()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "--ca-file: %v: give a PEM bundle of the CA certificates that sign the receiver's", err)
		}
		if !strings.HasPrefix(req.GetUrl(), "https://") {
			return nil, status.Error(codes.InvalidArgument, "--ca-file is for an https URL")
		}
	}
	if _, err := s.store.Webhook(nil, req.GetName()); err == nil {
		return nil, status.Errorf(codes.AlreadyExists, "webhook %q already exists: delete it first ('relctl webhook delete %s') or pick another name", req.GetName(), req.GetName())
	}
	now := time.Now()
	wh := &relv1.Webhook{Name: req.GetName(), Url: req.GetUrl(), Events: globs, Format: format, Secret: req.GetSecret(), CaPem: req.GetCaPem(), CreatedUnixNano: now.UnixNano()}
	a, err := s.applyCommand(ctx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_CreateWebhook{CreateWebhook: &relv1.CreateWebhook{Webhook: wh}}})
	if err != nil {
		return nil, toStatus(err)
	}
	s.waitLocal(ctx, a.Index)
	stored, err := s.store.Webhook(nil, wh.GetName())
	if err != nil {
		wh.CreateIndex, wh.ModifyIndex = a.Index, a.Index
		stored = wh
	}
	s.logger.Info("webhook created", "name", wh.GetName(), "url", wh.GetUrl(), "events", strings.Join(globs, ","), "by", auth.FromContext(ctx).String())
	return &relv1.CreateWebhookResponse{Webhook: publicWebhook(stored), Index: a.Index}, nil
}

func (w *webhookService) ListWebhooks(ctx context.Context, req *relv1.ListWebhooksRequest) (*relv1.ListWebhooksResponse, error) {
	s := w.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewWebhookServiceClient(conn).ListWebhooks(forwardCtx(ctx), req)
	}
	whs, idx, err := s.store.Webhooks(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ListWebhooksResponse{Index: idx}
	for _, wh := range whs {
		resp.Webhooks = append(resp.Webhooks, publicWebhook(wh))
	}
	return resp, nil
}

func (w *webhookService) GetWebhook(ctx context.Context, req *relv1.GetWebhookRequest) (*relv1.GetWebhookResponse, error) {
	s := w.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewWebhookServiceClient(conn).GetWebhook(forwardCtx(ctx), req)
	}
	if err := validate.Name("webhook name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	wh, err := s.store.Webhook(nil, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	dls, err := s.store.DeadLetters(nil, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.GetWebhookResponse{Webhook: publicWebhook(wh), DeadLetters: dls, Index: wh.GetModifyIndex()}, nil
}

func (w *webhookService) DeleteWebhook(ctx context.Context, req *relv1.DeleteWebhookRequest) (*relv1.DeleteWebhookResponse, error) {
	s := w.s
	if err := validate.Name("webhook name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_DeleteWebhook{DeleteWebhook: &relv1.DeleteWebhook{Name: req.GetName()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	s.logger.Info("webhook deleted", "name", req.GetName(), "by", auth.FromContext(ctx).String())
	return &relv1.DeleteWebhookResponse{Index: idx}, nil
}

func (w *webhookService) RedeliverWebhook(ctx context.Context, req *relv1.RedeliverWebhookRequest) (*relv1.RedeliverWebhookResponse, error) {
	s := w.s
	if err := validate.Name("webhook name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetSeq() == 0 {
		return nil, status.Error(codes.InvalidArgument, "no event seq given: 'relctl webhook dead-letters NAME' lists the seqs to redeliver")
	}
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_RedeliverWebhook{RedeliverWebhook: &relv1.RedeliverWebhook{Name: req.GetName(), Seq: req.GetSeq()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.RedeliverWebhookResponse{Index: idx}, nil
}

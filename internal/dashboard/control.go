package dashboard

import (
	"net/http"
	"net/url"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// confirmView is the confirmation page of a control sent without the
// confirm step (a browser without scripts, or a hand-made POST).
type confirmView struct {
	ID, Action, Label, Question, CSRF, Reason string
}

// control runs a rollout control (pause, resume, approve, abort,
// rollback) as the session's principal through the server's own gRPC
// methods: their authorization rule (a viewer gets 403 here whether or
// not the page showed a button), the FSM's checks and the audit trail
// apply as for relctl. A request without confirmed=yes gets a
// confirmation page instead.
func (d *Dashboard) control(w http.ResponseWriter, r *http.Request, v *view) {
	ctx := r.Context()
	id, action := r.PathValue("id"), r.PathValue("action")
	reason := r.PostFormValue("reason")
	switch action {
	case rollout.ActionPause, rollout.ActionResume, rollout.ActionApprove, rollout.ActionAbort, "rollback":
	default:
		d.fail(w, r, v, status.Errorf(codes.NotFound, "%q is not a rollout control: use pause, resume, approve, abort or rollback", action))
		return
	}
	resp, err := call[*relv1.GetRolloutResponse](ctx, d, v, relv1.ControlService_GetRollout_FullMethodName, &relv1.GetRolloutRequest{Id: id})
	if err != nil {
		d.fail(w, r, v, err)
		return
	}
	ro := resp.GetStatus().GetRollout()
	if r.PostFormValue("confirmed") != "yes" {
		label, question := action, "Really "+action+" rollout "+id+"?"
		for _, c := range controls(v.p, ro) {
			if c.Action == action {
				label, question = c.Label, c.Confirm
			}
		}
		v.Title = "Confirm " + action
		v.Data = confirmView{ID: id, Action: action, Label: label, Question: question, CSRF: v.Session.CSRF, Reason: reason}
		d.render(w, http.StatusOK, "confirm.html", v)
		return
	}
	method, req := controlRequest(ro, action, reason)
	if _, err := d.cfg.Backend.Invoke(ctx, v.p, method, req); err != nil {
		d.log.Info("dashboard control refused", "rollout", id, "action", action, "caller", v.Who, "err", status.Convert(err).Message())
		d.fail(w, r, v, err)
		return
	}
	d.log.Info("dashboard control", "rollout", id, "action", action, "caller", v.Who)
	http.Redirect(w, r, "/ui/rollouts/"+url.PathEscape(id)+"?done="+url.QueryEscape(action), http.StatusSeeOther)
}

// controlRequest is the gRPC call an action on ro is, as relctl makes it.
// Approve means the gate ro waits at, named so that a stale page never
// opens a later one: the start (wave 0) or the next wave. A rollout
// requested under an approval policy is approved through the policy
// (ApprovalService.Approve, the approve permission); a between-wave gate
// without one through ControlRollout (deploy).
func controlRequest(ro *relv1.Rollout, action, reason string) (string, proto.Message) {
	id := ro.GetId()
	var wave uint32
	if ro.GetState() != rollout.StateAwaitingApproval {
		wave = rollout.WaveNumber(ro, ro.GetCurrentWave()+1)
	}
	switch {
	case action == "rollback":
		return relv1.ControlService_RollbackRollout_FullMethodName, &relv1.RollbackRolloutRequest{Id: id}
	case action == rollout.ActionApprove && (ro.GetApprovalPolicy() != nil || ro.GetState() == rollout.StateAwaitingApproval):
		return relv1.ApprovalService_Approve_FullMethodName, &relv1.ApproveRolloutRequest{Id: id, Comment: reason, Wave: wave}
	case action == rollout.ActionApprove:
		return relv1.ControlService_ControlRollout_FullMethodName, &relv1.ControlRolloutRequest{Id: id, Action: action, Reason: reason, Wave: wave}
	}
	return relv1.ControlService_ControlRollout_FullMethodName, &relv1.ControlRolloutRequest{Id: id, Action: action, Reason: reason}
}

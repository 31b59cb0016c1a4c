package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate-dev/tollgate/internal/wire"
	"github.com/tollgate-dev/tollgate/policies/decision"
	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Limiter carries out a decision's limits and charge; *ratelimit.Engine
// implements it.
type Limiter interface {
	Take(ctx context.Context, req *ratelimit.Request) (*ratelimit.Outcome, error)
}

// enforce applies the decision's limits and charge and turns an exceeded
// limit or a short balance into a denial. A charge settled on delivery is
// reserved under the request's id (Envoy's x-request-id), and the
// reservation is named in the response's dynamic metadata for the access
// log to settle. It returns an error only when the store failed and the
// request's limits fail closed.
func enforce(ctx context.Context, lim Limiter, d *decision.Decision, revision, requestID string) error {
	if !d.Allow || (len(d.Limits) == 0 && d.Charge == nil) {
		return nil
	}
	if lim == nil {
		return nil // no limit engine configured: limits are parsed only
	}
	req := &ratelimit.Request{Limits: d.Limits, Charge: d.Charge, Consumer: d.Consumer, Revision: revision}
	if d.Charge != nil && d.Charge.Reserves() {
		switch {
		case requestID == "":
			deny(d, http.StatusBadRequest, "request_id_required",
				"This route is charged on delivery, which needs the request's x-request-id; Envoy sets it unless generate_request_id is off.")
			return nil
		case len(requestID) > ratelimit.MaxReservationID:
			deny(d, http.StatusBadRequest, "request_id_too_long",
				fmt.Sprintf("The request's x-request-id is %d bytes long; at most %d are allowed.", len(requestID), ratelimit.MaxReservationID))
			return nil
		}
		req.Reservation = requestID
	}
	out, err := lim.Take(ctx, req)
	if errors.Is(err, ratelimit.ErrDuplicateReservation) {
		deny(d, http.StatusConflict, "duplicate_request_id",
			"Another request with this x-request-id is being charged; send each request with its own id.")
		return nil
	}
	if err != nil {
		return err
	}
	if out.Degraded {
		d.Headers = append(d.Headers, decision.Header{Key: wire.HeaderDegraded, Value: "limits_not_enforced"})
		return nil
	}
	d.Outcome = out
	if d.Charge != nil {
		d.Headers = append(d.Headers, decision.Header{Key: wire.HeaderBalance, Value: strconv.FormatInt(out.Balance, 10)})
	}
	if p, st := ratelimit.PolicyHeader(d.Limits, out), ratelimit.StateHeader(d.Limits, out); p != "" && st != "" {
		d.ResponseHeaders = append(d.ResponseHeaders,
			decision.Header{Key: "ratelimit-policy", Value: p},
			decision.Header{Key: "ratelimit", Value: st})
	}
	if out.Allowed {
		if out.Reserved {
			setReservation(d, req.Reservation)
		}
		return nil
	}
	d.Allow = false
	d.Headers = nil
	switch {
	case out.Denied == ratelimit.DeniedByCharge:
		c := d.Charge
		d.Status = 402
		d.Reason = "credits_exhausted"
		d.Detail = fmt.Sprintf("This request costs %d credits and the balance of %q is %d. Top up to continue.", c.Credits, c.Account, out.Balance)
		d.Balance = &out.Balance
	case out.Denied >= 0:
		l := &d.Limits[out.Denied]
		d.Status = l.OnExceed
		d.Limit = l.Name
		if l.Cost > ratelimit.Capacity(l) {
			// No amount of waiting helps: say so rather than Retry-After.
			d.Reason = "request_too_large"
			d.Detail = fmt.Sprintf("This request costs %d units; limit %q allows at most %d at once.", l.Cost, l.Name, ratelimit.Capacity(l))
			return nil
		}
		if l.IsRate() {
			d.Reason = "rate_limited"
			d.Detail = fmt.Sprintf("Limit %q allows %d requests per %s. Retry in %d s.", l.Name, l.Limit, l.Window, ratelimit.Seconds(out.RetryAfter))
		} else {
			d.Reason = "quota_exceeded"
			d.Detail = fmt.Sprintf("Limit %q allows %d requests per %s; the period ends in %d s.", l.Name, l.Limit, l.Period, ratelimit.Seconds(out.Limits[out.Denied].Reset))
		}
	}
	if out.RetryAfter > 0 {
		d.ResponseHeaders = append(d.ResponseHeaders, decision.Header{Key: "retry-after", Value: strconv.FormatInt(ratelimit.Seconds(out.RetryAfter), 10)})
	}
	return nil
}

// deny turns an allowing decision into a denial with status and reason.
func deny(d *decision.Decision, status int, reason, detail string) {
	d.Allow, d.Headers = false, nil
	d.Status, d.Reason, d.Detail = status, reason, detail
}

// setReservation merges {"tollgate": {"account", "reservation",
// "settle"}} (internal/wire) into the decision's dynamic metadata; a
// "tollgate" key the policy set is replaced.
func setReservation(d *decision.Decision, id string) {
	ownMetadata(d)
	d.DynamicMetadata.Fields[wire.MetadataKey] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		wire.MetadataAccount:     structpb.NewStringValue(d.Charge.Account),
		wire.MetadataReservation: structpb.NewStringValue(id),
		wire.MetadataSettle:      structpb.NewStringValue(string(d.Charge.Settle)),
	}})
}

// ownMetadata gives the decision dynamic metadata of its own (the
// policy's may be shared), with a fields map.
func ownMetadata(d *decision.Decision) {
	if d.DynamicMetadata == nil {
		d.DynamicMetadata = &structpb.Struct{}
	} else {
		d.DynamicMetadata = proto.Clone(d.DynamicMetadata).(*structpb.Struct)
	}
	if d.DynamicMetadata.Fields == nil {
		d.DynamicMetadata.Fields = map[string]*structpb.Value{}
	}
}

// dropForgedReservation removes a "tollgate" key the policy put in the
// dynamic metadata of a response that reserved nothing: only Tollgate
// names reservations, or the access log would settle whatever a policy
// (perhaps echoing the client) wrote there.
func dropForgedReservation(d *decision.Decision) {
	if _, ok := d.DynamicMetadata.GetFields()[wire.MetadataKey]; !ok || (d.Allow && d.Outcome != nil && d.Outcome.Reserved) {
		return
	}
	ownMetadata(d)
	delete(d.DynamicMetadata.Fields, wire.MetadataKey)
}

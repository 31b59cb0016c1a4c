package authz

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/ratelimit"
)

// Limiter carries out a decision's limits and charge; *ratelimit.Engine
// implements it.
type Limiter interface {
	Take(ctx context.Context, req *ratelimit.Request) (*ratelimit.Outcome, error)
}

// Upstream headers set from the limit engine's outcome.
const (
	HeaderBalance  = HeaderPrefix + "balance"
	HeaderDegraded = HeaderPrefix + "degraded"
)

// enforce applies the decision's limits and charge and turns an exceeded
// limit or a short balance into a denial. It returns an error only when the
// store failed and the request's limits fail closed.
func enforce(ctx context.Context, lim Limiter, d *Decision) error {
	if !d.Allow || (len(d.Limits) == 0 && d.Charge == nil) {
		return nil
	}
	if lim == nil {
		return nil // no limit engine configured: limits are parsed only
	}
	out, err := lim.Take(ctx, ratelimit.Scoped(d.Consumer, d.Limits, d.Charge))
	if err != nil {
		return err
	}
	if out.Degraded {
		d.Headers = append(d.Headers, Header{Key: HeaderDegraded, Value: "limits_not_enforced"})
		return nil
	}
	d.Outcome = out
	if d.Charge != nil {
		d.Headers = append(d.Headers, Header{Key: HeaderBalance, Value: strconv.FormatInt(out.Balance, 10)})
	}
	if len(d.Limits) > 0 {
		d.ResponseHeaders = append(d.ResponseHeaders,
			Header{Key: "ratelimit-policy", Value: rateLimitPolicy(d.Limits, out)},
			Header{Key: "ratelimit", Value: rateLimit(d.Limits, out)})
	}
	if out.Allowed {
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
		if l.Cost > capacity(l) {
			// No amount of waiting helps: say so rather than Retry-After.
			d.Reason = "request_too_large"
			d.Detail = fmt.Sprintf("This request costs %d units; limit %q allows at most %d at once.", l.Cost, l.Name, capacity(l))
			return nil
		}
		if l.IsRate() {
			d.Reason = "rate_limited"
			d.Detail = fmt.Sprintf("Limit %q allows %d requests per %s. Retry in %d s.", l.Name, l.Limit, l.Window, seconds(out.RetryAfter))
		} else {
			d.Reason = "quota_exceeded"
			d.Detail = fmt.Sprintf("Limit %q allows %d requests per %s; the period ends in %d s.", l.Name, l.Limit, l.Period, seconds(out.Limits[out.Denied].Reset))
		}
	}
	if out.RetryAfter > 0 {
		d.ResponseHeaders = append(d.ResponseHeaders, Header{Key: "retry-after", Value: strconv.FormatInt(seconds(out.RetryAfter), 10)})
	}
	return nil
}

// capacity is the most a limit can take at once: the burst of a rate
// limit, the quota of a period.
func capacity(l *ratelimit.Limit) int64 {
	if l.IsRate() && l.Burst > 0 {
		return l.Burst
	}
	return l.Limit
}

// seconds rounds up: a client that waits this long will find room.
func seconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// rateLimitPolicy is the RateLimit-Policy header
// (draft-ietf-httpapi-ratelimit-headers): every limit, with its quota and
// window in seconds.
func rateLimitPolicy(limits []ratelimit.Limit, out *ratelimit.Outcome) string {
	var b strings.Builder
	for i := range limits {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q;q=%d;w=%d", limits[i].Name, capacity(&limits[i]), max(seconds(out.Limits[i].Window), 1))
	}
	return b.String()
}

// rateLimit is the RateLimit header: the limit that denied, or else the
// one closest to exhaustion, with its remaining units and seconds to reset.
func rateLimit(limits []ratelimit.Limit, out *ratelimit.Outcome) string {
	pick := out.Denied
	if pick < 0 {
		best := math.Inf(1)
		for i := range limits {
			if out.Limits[i].Overage {
				continue
			}
			if r := float64(out.Limits[i].Remaining) / float64(capacity(&limits[i])); r < best {
				best, pick = r, i
			}
		}
	}
	if pick < 0 {
		pick = 0
	}
	st := out.Limits[pick]
	return fmt.Sprintf("%q;r=%d;t=%d", limits[pick].Name, st.Remaining, seconds(st.Reset))
}

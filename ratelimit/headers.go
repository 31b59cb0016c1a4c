package ratelimit

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Headers of draft-ietf-httpapi-ratelimit-headers, shared by ext_authz and
// the rate limit service.

// Capacity is the most a limit can take at once: the burst of a rate
// limit, the quota of a period.
func Capacity(l *Limit) int64 {
	if l.IsRate() && l.Burst > 0 {
		return l.Burst
	}
	return l.Limit
}

// Seconds rounds up: a client that waits this long will find room.
func Seconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// PolicyHeader is the RateLimit-Policy header
// (draft-ietf-httpapi-ratelimit-headers): every limit, with its quota and
// window in seconds.
func PolicyHeader(limits []Limit, out *Outcome) string {
	var b strings.Builder
	for i := range limits {
		if limits[i].Shadow {
			continue // shadow limits never refuse: not announced
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q;q=%d;w=%d", limits[i].Name, Capacity(&limits[i]), max(Seconds(out.Limits[i].Window), 1))
	}
	return b.String()
}

// StateHeader is the RateLimit header: the limit that denied, or else the
// one closest to exhaustion, with its remaining units and seconds to reset.
func StateHeader(limits []Limit, out *Outcome) string {
	pick := out.Denied
	if pick < 0 {
		best := math.Inf(1)
		for i := range limits {
			if out.Limits[i].Overage || limits[i].Shadow {
				continue
			}
			if r := float64(out.Limits[i].Remaining) / float64(Capacity(&limits[i])); r < best {
				best, pick = r, i
			}
		}
	}
	if pick < 0 {
		return ""
	}
	st := out.Limits[pick]
	return fmt.Sprintf("%q;r=%d;t=%d", limits[pick].Name, st.Remaining, Seconds(st.Reset))
}

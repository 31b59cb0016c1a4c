package ratelimit

import "time"

// PeriodStart returns the start of the calendar period containing t, in
// loc (UTC when nil). Weeks start on Monday (ISO 8601).
func PeriodStart(p Period, loc *time.Location, t time.Time) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	y, m, d := t.Date()
	switch p {
	case Hour:
		// The local wall-clock hour. Where DST falls back, the repeated
		// hour is one period of two real hours.
		return time.Date(y, m, d, t.Hour(), 0, 0, 0, loc)
	case Day:
		return time.Date(y, m, d, 0, 0, 0, 0, loc)
	case Week:
		offset := (int(t.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, d-offset, 0, 0, 0, 0, loc)
	case Month:
		return time.Date(y, m, 1, 0, 0, 0, 0, loc)
	case Year:
		return time.Date(y, 1, 1, 0, 0, 0, 0, loc)
	}
	panic("ratelimit: unknown period " + string(p)) // unreachable: periods are validated when parsed
}

// NextPeriod returns the start of the period after the one starting at start.
func NextPeriod(p Period, loc *time.Location, start time.Time) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	s := start.In(loc)
	y, m, d := s.Date()
	switch p {
	case Hour:
		next := time.Date(y, m, d, s.Hour()+1, 0, 0, 0, loc)
		if !next.After(start) { // a DST fold repeats the wall-clock hour
			next = start.Add(time.Hour)
		}
		return next
	case Day:
		return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case Week:
		return time.Date(y, m, d+7, 0, 0, 0, 0, loc)
	case Month:
		return time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	case Year:
		return time.Date(y+1, 1, 1, 0, 0, 0, 0, loc)
	}
	panic("ratelimit: unknown period " + string(p))
}

// PreviousPeriod returns the start of the period before the one starting at
// start.
func PreviousPeriod(p Period, loc *time.Location, start time.Time) time.Time {
	return PeriodStart(p, loc, start.Add(-time.Nanosecond))
}

// Period returns the start and end of the period containing t.
func (l *Limit) PeriodBounds(t time.Time) (start, end time.Time) {
	start = PeriodStart(l.Period, l.Location, t)
	return start, NextPeriod(l.Period, l.Location, start)
}

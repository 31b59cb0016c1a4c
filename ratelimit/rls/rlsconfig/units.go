package rlsconfig

import "time"

// units are the units envoyproxy/ratelimit accepts, in order, for messages.
var units = []string{"second", "minute", "hour", "day", "week", "month", "year"}

const unitList = "second, minute, hour, day, week, month, year"

// Window returns the length of a fixed-window unit: second, minute, hour, day
// or week. It returns 0 for month and year, which are calendar periods (see
// Period), and for anything else.
func Window(unit string) time.Duration {
	switch unit {
	case "second":
		return time.Second
	case "minute":
		return time.Minute
	case "hour":
		return time.Hour
	case "day":
		return 24 * time.Hour
	case "week":
		return 7 * 24 * time.Hour
	}
	return 0
}

// Period reports whether unit is a calendar period, month or year, and
// returns its name as Tollgate's ratelimit package spells periods. Tollgate
// counts these per calendar month or year, where envoyproxy/ratelimit uses
// fixed windows of 30 and 365 days.
func Period(unit string) (string, bool) {
	switch unit {
	case "month", "year":
		return unit, true
	}
	return "", false
}

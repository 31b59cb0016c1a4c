package rlsconfig

import "time"

// units are the units envoyproxy/ratelimit accepts, in order, for messages.
var units = []string{"second", "minute", "hour", "day", "week", "month", "year"}

const unitList = "second, minute, hour, day, week, month, year"

// Window returns the length of a fixed-window unit: second, minute, hour, day
// or week. It returns 0 for month and year, which are calendar periods, and
// for anything else.
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

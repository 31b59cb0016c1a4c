//go:build !race

package yamlstrict_test

const raceEnabled = false

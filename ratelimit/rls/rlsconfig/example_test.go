package rlsconfig_test

import (
	"fmt"

	"github.com/tollgate-dev/tollgate/ratelimit/rls/rlsconfig"
)

func ExampleConfig_Match() {
	cfg, err := rlsconfig.Load(map[string][]byte{"messaging.yaml": []byte(`
domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 5}
  - key: to_number
    rate_limit: {unit: day, requests_per_unit: 100}
`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, entries := range [][]rlsconfig.Entry{
		{{Key: "message_type", Value: "marketing"}, {Key: "to_number", Value: "2061111111"}},
		{{Key: "to_number", Value: "2061111111"}},
		{{Key: "message_type", Value: "marketing"}},
	} {
		if r := cfg.Match("messaging", entries); r != nil {
			fmt.Printf("%s: %d per %s\n", r.Name, r.RequestsPerUnit, r.Unit)
		} else {
			fmt.Println("no limit")
		}
	}
	// Output:
	// messaging.message_type_marketing.to_number: 5 per day
	// messaging.to_number: 100 per day
	// no limit
}

func ExampleLoad_errors() {
	_, err := rlsconfig.Load(map[string][]byte{"limits.yaml": []byte(`domain: api
descriptors:
  - key: user
    rate_limit:
      unit: fortnight
      requests_per_unit: 10
    shadow: true
`)})
	fmt.Println(err)
	// Output:
	// limits.yaml:5: unit "fortnight" is not one of second, minute, hour, day, week, month, year
	// limits.yaml:7: unknown key "shadow" (allowed: key, value, rate_limit, descriptors, shadow_mode, replaces, detailed_metric, unlimited, value_to_metric, share_threshold)
}

package policies

import (
	"embed"
	"io/fs"
)

//go:embed demo/*.rego demo/*.json
var demo embed.FS

// Embedded returns the bundled demo policy and its data (policies/demo), laid
// out as they are on disk, so `tollgate serve` without a config file runs
// the same policy that `tollgate policy test policies/` tests.
func Embedded() fs.FS { return demo }

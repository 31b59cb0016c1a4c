package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	opaversion "github.com/open-policy-agent/opa/v1/version"
)

// Version is set at build time with -ldflags "-X main.Version=v1.2.3";
// otherwise the module version (or "devel") is used.
var Version = ""

func versionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func version(w io.Writer) error {
	_, err := fmt.Fprintf(w, "tollgate %s (opa %s, %s %s/%s)\n", versionString(), opaversion.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/tollgate-dev/tollgate/xds"
)

// routesCmd: tollgate routes validate FILE | routes render FILE.
func routesCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || (args[0] != "validate" && args[0] != "render") {
		fmt.Fprintln(stderr, "usage: tollgate routes validate FILE | tollgate routes render FILE")
		return errUsage
	}
	f, err := xds.Load(args[1])
	if err != nil {
		return err
	}
	r, err := xds.Build(f, "")
	if err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	snap, err := r.Snapshot()
	if err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	if args[0] == "validate" {
		_, err := fmt.Fprintf(stdout, "%s: valid (%d listeners, %d routes configurations, %d clusters, %d endpoint sets; version %s)\n",
			args[1], len(r.Listeners), len(r.Routes), len(r.Clusters), len(r.Endpoints), snap.GetVersion(resource.ListenerType))
		return err
	}
	out, err := xds.Render(r)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration file (default: embedded demo)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	a, err := app.New(ctx, cfg, log, versionString())
	if err != nil {
		return err
	}
	a.Banner(stdout)
	log.Info("serving", "grpc", a.GRPCAddr(), "admin", a.AdminAddr(), "policy_revision", a.Engine().Revision())
	if err := a.Run(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		c := config.Default()
		none := config.Duration(0) // the loopback demo: Ctrl-C stops it at once
		c.ShutdownDelay = &none
		bearer := true // the demo policy takes a key from Authorization: Bearer too
		c.Authz.Credentials.Bearer = &bearer
		return c, nil
	}
	return config.Load(path)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

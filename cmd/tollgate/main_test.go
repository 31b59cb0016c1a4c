package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestPolicyTest(t *testing.T) {
	t.Run("shipped policies pass", func(t *testing.T) {
		out, _, err := runCmd(t, "policy", "test", "../../policies")
		if err != nil {
			t.Fatalf("err = %v\n%s", err, out)
		}
		if !regexp.MustCompile(`PASS: (\d+)/(\d+)`).MatchString(out) {
			t.Errorf("output lacks the PASS summary:\n%s", out)
		}
	})
	t.Run("a failing test fails the command", func(t *testing.T) {
		out, _, err := runCmd(t, "policy", "test", "testdata/failing")
		if !errors.Is(err, errTestsFailed) {
			t.Fatalf("err = %v, want errTestsFailed (exit 1)", err)
		}
		if !strings.Contains(out, "test_fails") || !strings.Contains(out, "FAIL: 1/2") {
			t.Errorf("output does not name the failure:\n%s", out)
		}
	})
	t.Run("no tests is a failure", func(t *testing.T) {
		_, errOut, err := runCmd(t, "policy", "test", "testdata/notests")
		if !errors.Is(err, errTestsFailed) || !strings.Contains(errOut, "no test_ rules") {
			t.Errorf("err = %v, stderr %q", err, errOut)
		}
	})
	t.Run("no path is a usage error", func(t *testing.T) {
		if _, _, err := runCmd(t, "policy", "test"); !errors.Is(err, errUsage) {
			t.Errorf("err = %v, want errUsage", err)
		}
	})
}

func TestPolicyEval(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want map[string]any // JSON paths (dot separated) to expected values
	}{
		{
			name: "demo allows the fixture",
			args: []string{"--input", "{input}"},
			want: map[string]any{"decision.allow": true, "decision.consumer": "acme", "check_response.okResponse.headers.0.header.value": "acme",
				"check_response.okResponse.headersToRemove.0": "x-api-key"},
		},
		{
			name: "opa-envoy policy by flags",
			args: []string{"--input", "{input}", "--policy", "../../authz/testdata/policies/envoy_bool", "--decision", "envoy/authz/allow"},
			want: map[string]any{"decision": false, "check_response.deniedResponse.status.code": "Forbidden"},
		},
	}
	// policy eval reads a bare CheckRequest; cut one out of a golden case.
	raw, err := os.ReadFile("../../authz/testdata/check/demo_200_api_key.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Request json.RawMessage `json:"request"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(input, c.Request, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"policy", "eval"}
			for _, a := range tt.args {
				args = append(args, strings.ReplaceAll(a, "{input}", input))
			}
			out, errOut, err := runCmd(t, args...)
			if err != nil {
				t.Fatalf("err = %v\nstderr: %s", err, errOut)
			}
			var doc any
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			for path, want := range tt.want {
				if got := lookup(doc, path); got != want {
					t.Errorf("%s = %v, want %v\n%s", path, got, want, out)
				}
			}
		})
	}
	t.Run("malformed input names the file", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.json")
		_ = os.WriteFile(bad, []byte(`{"attributes": {"requst": {}}}`), 0o644)
		_, _, err := runCmd(t, "policy", "eval", "--input", bad)
		if err == nil || !strings.Contains(err.Error(), "bad.json") || !strings.Contains(err.Error(), "requst") {
			t.Errorf("err = %v, want the file and the unknown field named", err)
		}
	})
}

func lookup(doc any, path string) any {
	for _, p := range strings.Split(path, ".") {
		switch v := doc.(type) {
		case map[string]any:
			doc = v[p]
		case []any:
			i := int(p[0] - '0')
			if i >= len(v) {
				return nil
			}
			doc = v[i]
		default:
			return nil
		}
	}
	return doc
}

func TestServeRejectsBadConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "tollgate.yaml")
	_ = os.WriteFile(cfg, []byte("grpc:\n  adress: 127.0.0.1:1\n"), 0o644)
	_, _, err := runCmd(t, "serve", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), `unknown key "adress" in grpc`) || !strings.Contains(err.Error(), "tollgate.yaml:2:") {
		t.Errorf("err = %v, want the unknown key and its line", err)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"frobnicate"}, {"policy"}, {"serve", "extra"}} {
		if _, _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: err = %v, want errUsage", args, err)
		}
	}
	out, _, err := runCmd(t, "version")
	if err != nil || !strings.HasPrefix(out, "tollgate ") || !strings.Contains(out, "opa ") {
		t.Errorf("version = %q, %v", out, err)
	}
}

// TestSIGTERM runs the real binary: it prints its banner, serves, and on
// SIGTERM drains and exits 0.
func TestSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "tollgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "tollgate.yaml")
	_ = os.WriteFile(cfg, []byte("grpc:\n  address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nshutdown_delay: 200ms\n"), 0o644)
	cmd := exec.Command(bin, "serve", "--config", cfg)
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	serving := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Authorization/Check") {
			serving = true
			break
		}
	}
	if !serving {
		_ = cmd.Process.Kill()
		t.Fatalf("no banner; stderr:\n%s", stderr.String())
	}
	go func() { _, _ = bufio.NewReader(stdout).WriteTo(&bytes.Buffer{}) }()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want 0\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("did not exit within 15s of SIGTERM")
	}
	for _, want := range []string{"not ready, serving for shutdown_delay", "delay=200ms", "draining in-flight calls"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not log the shutdown (%q):\n%s", want, stderr.String())
		}
	}
}

func TestRoutesCommands(t *testing.T) {
	out, _, err := runCmd(t, "routes", "validate", "../../examples/xds/routes.yaml")
	if err != nil || !strings.Contains(out, "valid (1 listeners") {
		t.Errorf("validate: %q %v", out, err)
	}
	out, _, err = runCmd(t, "routes", "render", "../../examples/xds/routes.yaml")
	var doc struct {
		Version   string           `json:"version"`
		Resources []map[string]any `json:"resources"`
	}
	if err != nil || json.Unmarshal([]byte(out), &doc) != nil || doc.Version == "" || len(doc.Resources) < 5 {
		t.Errorf("render: %v, %d resources, version %q", err, len(doc.Resources), doc.Version)
	}
	bad := filepath.Join(t.TempDir(), "routes.yaml")
	_ = os.WriteFile(bad, []byte("listeners:\n  - name: l\n    adress: 0.0.0.0:80\n"), 0o644)
	if _, _, err := runCmd(t, "routes", "validate", bad); err == nil || !strings.Contains(err.Error(), "routes.yaml:3") {
		t.Errorf("broken file: %v, want an error naming routes.yaml:3", err)
	}
	if _, _, err := runCmd(t, "routes", "frobnicate", bad); !errors.Is(err, errUsage) {
		t.Errorf("unknown subcommand: %v", err)
	}
}

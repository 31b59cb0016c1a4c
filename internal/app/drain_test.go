package app_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate-dev/tollgate/internal/app"
	"github.com/tollgate-dev/tollgate/internal/config"
)

// TestShutdownDelay: under load, SIGTERM makes /readyz answer 503 and gRPC
// health NOT_SERVING at once, while every call keeps being answered for
// shutdown_delay; only then do the listeners drain and close. Without the
// delay, readiness and the close came within milliseconds of each other and
// thousands of calls were refused during a drain.
func TestShutdownDelay(t *testing.T) {
	const delay = time.Second
	cfg := testConfig()
	d := config.Duration(delay)
	cfg.ShutdownDelay = &d
	r := start(t, cfg)
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal([]byte(app.DemoAllowed), req); err != nil {
		t.Fatal(err)
	}
	client := authv3.NewAuthorizationClient(r.conn)

	// Load: workers Check in a loop until Run has returned, recording when
	// the first call failed.
	var (
		answered    atomic.Int64
		firstFail   atomic.Int64 // unix nanos; 0: none yet
		stopLoad    = make(chan struct{})
		wg          sync.WaitGroup
		loadStarted = make(chan struct{}, 4)
	)
	for range 4 {
		wg.Go(func() {
			loadStarted <- struct{}{}
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := client.Check(ctx, req)
				cancel()
				if err != nil {
					firstFail.CompareAndSwap(0, time.Now().UnixNano())
				} else {
					answered.Add(1)
				}
			}
		})
	}
	for range 4 {
		<-loadStarted
	}

	admin := "http://" + r.app.AdminAddr()
	hc := healthpb.NewHealthClient(r.conn)
	sigterm := time.Now()
	r.cancel()
	// Readiness flips first (polled: the flip is asynchronous to cancel).
	var notReady time.Time
	for notReady.IsZero() {
		if code, _ := get(t, admin+"/readyz"); code == http.StatusServiceUnavailable {
			notReady = time.Now()
		} else if time.Since(sigterm) > delay {
			t.Fatalf("/readyz still %d %v after SIGTERM", code, time.Since(sigterm))
		}
	}
	resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health after SIGTERM = %v, %v; want NOT_SERVING", resp, err)
	}
	atFlip := answered.Load()

	err = <-r.done
	close(r.done)
	stopped := time.Now()
	close(stopLoad)
	wg.Wait()
	if err != nil {
		t.Errorf("Run = %v, want nil", err)
	}

	if took := stopped.Sub(sigterm); took < delay {
		t.Errorf("Run returned %v after SIGTERM, before shutdown_delay (%v)", took, delay)
	}
	if f := firstFail.Load(); f != 0 {
		gap := time.Unix(0, f).Sub(notReady)
		t.Logf("not ready %v after SIGTERM; first refused call %v after that", notReady.Sub(sigterm), gap)
		if gap < delay-notReady.Sub(sigterm) {
			t.Errorf("a call was refused %v after readiness flipped, within shutdown_delay (%v)", gap, delay)
		}
	}
	if served := answered.Load() - atFlip; served == 0 {
		t.Error("no call was answered between the readiness flip and the drain")
	} else {
		t.Logf("%d calls answered while not ready", served)
	}
}

// Package apitest holds fakes of api.API for the transports' tests.
package apitest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hostward/ward/api"
)

// Gate is an api.API that holds every call until Release is closed or the
// call's context ends, so a test can keep requests in flight.
type Gate struct {
	Release   chan struct{}
	entered   chan struct{} // a value per call begun
	cancelled atomic.Int32  // calls whose context ended first
}

// NewGate returns a gate that holds every call until Release is closed.
func NewGate() *Gate {
	return &Gate{Release: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (g *Gate) call(ctx context.Context, id string) (*api.Instance, error) {
	g.entered <- struct{}{}
	select {
	case <-g.Release:
		return &api.Instance{ID: id}, nil
	case <-ctx.Done():
		g.cancelled.Add(1)
		return &api.Instance{ID: "late-" + id}, nil
	}
}

func (g *Gate) Start(ctx context.Context, r api.Request) (*api.Instance, error) {
	return g.call(ctx, r.ID)
}
func (g *Gate) Stop(ctx context.Context, r api.StopRequest) (*api.Instance, error) {
	return g.call(ctx, r.ID)
}
func (g *Gate) Limit(ctx context.Context, r api.LimitRequest) (*api.Instance, error) {
	return g.call(ctx, r.ID)
}
func (g *Gate) Info(ctx context.Context, r api.InfoRequest) (*api.Instance, error) {
	return g.call(ctx, r.ID)
}
func (g *Gate) List(context.Context, api.ListRequest) (*api.List, error) { return &api.List{}, nil }

// Cancelled is how many calls saw their context end before the gate
// opened.
func (g *Gate) Cancelled() int { return int(g.cancelled.Load()) }

// WaitEntered waits until n more calls are in the API.
func (g *Gate) WaitEntered(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-g.entered:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d calls reached the API", i, n)
		}
	}
}

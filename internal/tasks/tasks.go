// Package tasks starts goroutines that a shutdown can join. Every goroutine
// started through a Group is known by its key until it returns; a closed
// Group starts no more; Wait returns once none runs, or when its context
// ends, and then says how many are left — a shutdown has a deadline and
// must be able to give up on a goroutine stuck in a call it does not
// control, and to act on each one it gives up on (see Running).
package tasks

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrClosed is returned by Go after Close.
var ErrClosed = errors.New("tasks: group closed")

// ErrStillRunning is wrapped by Wait's error when its context ended with
// goroutines still running.
var ErrStillRunning = errors.New("tasks: still running")

// Group tracks the goroutines it started. The zero Group is ready to use;
// it must not be copied after first use. Keys must be unique among the
// goroutines running at once.
type Group[K comparable] struct {
	mu      sync.Mutex
	closed  bool
	running map[K]struct{}
	// idle is closed when the last running goroutine returns; a new one
	// is made when the first of the next batch starts. nil: none runs.
	idle chan struct{}
}

// Go runs f on a new goroutine known as key until f returns. After Close it
// starts nothing and returns ErrClosed.
func (g *Group[K]) Go(key K, f func()) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	if g.running == nil {
		g.running = make(map[K]struct{})
	}
	if _, dup := g.running[key]; dup {
		g.mu.Unlock()
		// A programming error: two goroutines under one key would make
		// Running and Wait lie.
		panic(fmt.Sprintf("tasks: key %v is already running", key))
	}
	if len(g.running) == 0 {
		g.idle = make(chan struct{})
	}
	g.running[key] = struct{}{}
	g.mu.Unlock()
	go func() {
		defer g.done(key)
		f()
	}()
	return nil
}

func (g *Group[K]) done(key K) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.running, key)
	if len(g.running) == 0 {
		close(g.idle)
		g.idle = nil
	}
}

// Close makes Go refuse from now on. The goroutines running go on; Wait
// joins them.
func (g *Group[K]) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// Wait returns nil once no goroutine of the group runs (after Close, that
// stays so; before, more may start afterwards). If ctx ends first
// it returns an error wrapping ErrStillRunning and ctx's error, with the
// count left.
func (g *Group[K]) Wait(ctx context.Context) error {
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	// The last one may have returned just as ctx ended.
	if n := g.Len(); n > 0 {
		return fmt.Errorf("%w: %d goroutines: %w", ErrStillRunning, n, context.Cause(ctx))
	}
	return nil
}

// Len is how many goroutines of the group run now.
func (g *Group[K]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.running)
}

// Running returns the keys of the goroutines running now, in no order.
func (g *Group[K]) Running() []K {
	g.mu.Lock()
	defer g.mu.Unlock()
	keys := make([]K, 0, len(g.running))
	for k := range g.running {
		keys = append(keys, k)
	}
	return keys
}

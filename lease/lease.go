// Package lease hands out numbers from a closed range — uids, ports — each to
// one owner at a time.
//
// A Pool keeps no file of its own: the agent's instance records say who
// holds what, and the pool is rebuilt from them at start (Claim), so a lease
// can never outlive the record that justifies it.
package lease

import (
	"errors"
	"fmt"
	"sync"
)

var (
	// ErrExhausted: every number in the range is leased.
	ErrExhausted = errors.New("lease: range exhausted")
	// ErrInUse: the number is leased to another owner.
	ErrInUse = errors.New("lease: in use")
	// ErrOutOfRange: the number is outside the pool's range.
	ErrOutOfRange = errors.New("lease: out of range")
)

// Pool leases numbers in [min, max].
type Pool struct {
	mu       sync.Mutex
	min, max int
	next     int
	owners   map[int]string
}

// New returns an empty pool over [min, max].
func New(min, max int) *Pool {
	return &Pool{min: min, max: max, next: min, owners: make(map[int]string)}
}

// Range returns the pool's bounds.
func (p *Pool) Range() (min, max int) { return p.min, p.max }

// Acquire leases a free number to owner. Numbers are handed out round-robin,
// so one just released is the last to come back: whatever the old holder
// left behind has the longest time to be gone.
func (p *Pool) Acquire(owner string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	size := p.max - p.min + 1
	for i := 0; i < size; i++ {
		n := p.next
		p.next++
		if p.next > p.max {
			p.next = p.min
		}
		if _, taken := p.owners[n]; !taken {
			p.owners[n] = owner
			return n, nil
		}
	}
	return 0, ErrExhausted
}

// Claim leases n to owner. Claiming a number owner already holds succeeds.
func (p *Pool) Claim(n int, owner string) error {
	if n < p.min || n > p.max {
		return fmt.Errorf("%w: %d not in [%d, %d]", ErrOutOfRange, n, p.min, p.max)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, taken := p.owners[n]; taken && cur != owner {
		return fmt.Errorf("%w: %d held by %s", ErrInUse, n, cur)
	}
	p.owners[n] = owner
	return nil
}

// Release frees n if owner holds it; releasing a free number is a no-op, so
// a repeated cleanup is harmless.
func (p *Pool) Release(n int, owner string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owners[n] == owner {
		delete(p.owners, n)
	}
}

// Held reports whether n is leased, to any owner.
func (p *Pool) Held(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.owners[n]
	return ok
}

// Leased returns a copy of every lease, number to owner.
func (p *Pool) Leased() map[int]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[int]string, len(p.owners))
	for n, o := range p.owners {
		m[n] = o
	}
	return m
}

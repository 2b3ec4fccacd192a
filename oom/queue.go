package oom

import "sync"

// queue hands events from the event loop to the goroutine that calls the
// handler. It is unbounded so that the loop never waits for a handler; what
// can pile up is bounded in practice by one OOM event per kill, one Removed
// or Empty per group and rate-limited pressure.
type queue struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  []Event
	closed bool
	// pushed and delivered count events: equal when everything detected so
	// far has been handled (the tests wait for that).
	pushed, delivered uint64
}

func newQueue() *queue {
	q := &queue{}
	q.cond.L = &q.mu
	return q
}

func (q *queue) push(evs ...Event) {
	if len(evs) == 0 {
		return
	}
	q.mu.Lock()
	q.items = append(q.items, evs...)
	q.pushed += uint64(len(evs))
	q.mu.Unlock()
	q.cond.Signal()
}

// close makes run return once every queued event is delivered.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Signal()
}

// run calls handle for each event in order, one at a time.
func (q *queue) run(handle func(Event)) {
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.items) == 0 {
			q.mu.Unlock()
			return
		}
		batch := q.items
		q.items = nil
		q.mu.Unlock()
		for _, ev := range batch {
			handle(ev)
		}
		q.mu.Lock()
		q.delivered += uint64(len(batch))
		q.mu.Unlock()
	}
}

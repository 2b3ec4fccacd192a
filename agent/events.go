package agent

import (
	"sync"
	"time"
)

// Broker fans the agent's events out to subscribers (the local `ward
// events` stream; the bus attaches here too). It never blocks the agent: a
// subscriber that falls subscriberBuffer events behind is dropped, its
// channel closed, and it can resubscribe.
type Broker struct {
	host string
	mu   sync.Mutex
	seq  uint64
	subs map[chan Event]struct{}
}

const subscriberBuffer = 1024

// NewBroker returns a broker stamping events with host.
func NewBroker(host string) *Broker {
	return &Broker{host: host, subs: make(map[chan Event]struct{})}
}

// Subscribe returns a channel of every event from now on, and a function
// that ends the subscription.
func (b *Broker) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, subscriberBuffer)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.subs[ch]; ok {
			delete(b.subs, ch)
			close(ch)
		}
	}
}

// Publish numbers e and delivers it to every subscriber.
func (b *Broker) Publish(e Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	e.Seq = b.seq
	e.Host = b.host
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
			delete(b.subs, ch)
			close(ch)
		}
	}
	return e
}

func (a *Agent) emit(in *instance, kind, reason string, exitCode *int) {
	in.mu.Lock()
	e := Event{
		Time:     time.Now().UTC(),
		ID:       in.id,
		Name:     in.name,
		Index:    in.index,
		Kind:     kind,
		State:    in.rec.State,
		Reason:   reason,
		ExitCode: exitCode,
	}
	in.mu.Unlock()
	a.events.Publish(e)
}

func (a *Agent) emitLimits(in *instance, l Limits) {
	in.mu.Lock()
	e := Event{
		Time:   time.Now().UTC(),
		ID:     in.id,
		Name:   in.name,
		Index:  in.index,
		Kind:   EventLimitChanged,
		State:  in.rec.State,
		Limits: &l,
	}
	in.mu.Unlock()
	a.events.Publish(e)
}

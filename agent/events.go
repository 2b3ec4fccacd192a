package agent

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/hostward/ward/api"
)

// Broker fans the agent's events out to local subscribers (`ward events`).
// It never blocks the agent: a subscriber that falls subscriberBuffer
// events behind is dropped, its channel closed, and it can resubscribe
// (the events themselves are safe in the outbox until the bus has them).
type Broker struct {
	mu   sync.Mutex
	subs map[chan api.Event]struct{}
}

const subscriberBuffer = 1024

// NewBroker returns a broker with no subscribers.
func NewBroker() *Broker {
	return &Broker{subs: make(map[chan api.Event]struct{})}
}

// Subscribe returns a channel of every event from now on, and a function
// that ends the subscription.
func (b *Broker) Subscribe() (<-chan api.Event, func()) {
	ch := make(chan api.Event, subscriberBuffer)
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

// Publish delivers e to every subscriber.
func (b *Broker) Publish(e api.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
			delete(b.subs, ch)
			close(ch)
		}
	}
}

// publish numbers e, stores it in the outbox (from where the bus takes it)
// and hands it to local subscribers. The number comes from the outbox so it
// survives restarts: a host's events are numbered 1, 2, 3... for life.
func (a *Agent) publish(e api.Event) {
	a.deliver(a.number(e))
}

// number stores e in the outbox and returns it with its number (0 if it
// could not be stored). An event that announces a change of the record
// goes through commit instead.
func (a *Agent) number(e api.Event) api.Event {
	e.Host = a.cfg.HostID
	it, err := a.outbox.Append(func(seq uint64) (string, []byte, error) {
		e.Seq = seq
		b, err := json.Marshal(e)
		return api.EventSubject(e.Host, e.Kind), b, err
	})
	if err != nil {
		a.log.Error("event not stored: it will not reach the bus", "id", e.ID, "kind", e.Kind, "err", err)
		e.Seq = 0
	} else {
		e.Seq = it.Seq
	}
	return e
}

// deliver hands a numbered event to local subscribers.
func (a *Agent) deliver(e api.Event) {
	a.events.Publish(e)
	a.count(func(c Counters) { c.EventPublished(e.Kind) })
}

// event is a new event of kind about in, as of now. Caller holds in.mu.
func (in *instance) event(kind string) api.Event { return in.rec.event(kind) }

// event is a new event of kind about rec's instance, in rec's state, as of
// now.
func (rec *record) event(kind string) api.Event {
	return api.Event{Time: time.Now().UTC(), ID: rec.Spec.ID, Name: rec.Spec.Name, Index: rec.Spec.Index, Kind: kind, State: rec.State}
}

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
	a.deliver(a.number(e, false))
}

// announce is publish for an event whose change is not on record yet: it is
// numbered and stored at once, so that no crash after the record is written
// can lose it, but neither the bus nor a local subscriber sees it before
// commit is called, once the record says it. An agent that dies in between
// leaves the event stored for the next one's reconcile to answer (see
// announcedStarts).
func (a *Agent) announce(e api.Event) (commit func()) {
	e = a.number(e, true)
	return func() {
		if e.Seq != 0 {
			a.outbox.Release(e.Seq)
		}
		a.deliver(e)
	}
}

// number stores e in the outbox, held back from the bus if held, and
// returns it with its number (0 if it could not be stored).
func (a *Agent) number(e api.Event, held bool) api.Event {
	e.Host = a.cfg.HostID
	store := a.outbox.Append
	if held {
		store = a.outbox.AppendHeld
	}
	it, err := store(func(seq uint64) (string, []byte, error) {
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
func (in *instance) event(kind string) api.Event {
	return api.Event{Time: time.Now().UTC(), ID: in.id, Name: in.name, Index: in.index, Kind: kind, State: in.rec.State}
}

func (a *Agent) emit(in *instance, kind, reason string, exitCode *int) {
	in.mu.Lock()
	e := in.event(kind)
	e.Reason, e.ExitCode = reason, exitCode
	if in.rec.State.Terminal() {
		e.MemoryPeakBytes = in.rec.MemoryPeak
		e.OOMKills = in.rec.OOMKills
		e.StderrTail = in.rec.StderrTail
	}
	in.mu.Unlock()
	a.publish(e)
}

func (a *Agent) emitLimits(in *instance, l api.Limits) {
	in.mu.Lock()
	e := in.limitsEvent(l)
	in.mu.Unlock()
	a.publish(e)
}

// limitsEvent is the limit_changed event for limits l. Caller holds in.mu.
func (in *instance) limitsEvent(l api.Limits) api.Event {
	e := in.event(api.EventLimitChanged)
	e.Limits = &l
	return e
}

package bus

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hostward/ward/outbox"
)

// Publisher moves events from the outbox to the bus, oldest first, and
// removes them from the outbox only once the server confirmed them: a
// JetStream ack when a stream captures the subject, else a flush round trip
// (the server has then processed them). Anything unconfirmed is sent again,
// so events arrive at least once and in order; the sequence number in each
// lets a consumer drop repeats.
type Publisher struct {
	nc     *nats.Conn
	ob     *outbox.Outbox
	host   string
	log    *slog.Logger
	wake   chan struct{}
	stream string // JetStream stream for our events, "" if none
	probed bool
}

// Batch is how many events go out per confirmation round trip.
const Batch = 256

// NewPublisher returns a publisher of ob's events for host.
func NewPublisher(nc *nats.Conn, ob *outbox.Outbox, host string, log *slog.Logger) *Publisher {
	return &Publisher{nc: nc, ob: ob, host: host, log: log, wake: make(chan struct{}, 1)}
}

// Reconnected tells the publisher the connection is back (wire it to the
// connection's reconnect handler): it retries at once and looks for a
// JetStream stream again.
func (p *Publisher) Reconnected() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// FlushTimeout bounds how long Run, once its context ended, goes on
// publishing what the outbox holds: the connection closes after it (see
// `ward agent`), and what is left waits in the outbox for the next agent.
const FlushTimeout = 5 * time.Second

// Run publishes until ctx ends, then flushes: it publishes and confirms
// what the outbox still holds, for at most FlushTimeout, and returns.
func (p *Publisher) Run(ctx context.Context) {
	defer p.flush(ctx)
	retry := time.NewTimer(0)
	defer retry.Stop()
	backoff := 50 * time.Millisecond
	for {
		items := p.ob.Pending(Batch)
		// Once ctx ended, flush sends what is left, under a context of
		// its own.
		if len(items) > 0 && p.nc.IsConnected() && ctx.Err() == nil {
			if err := p.send(ctx, items); err != nil {
				p.log.Warn("events not confirmed; will resend", "from_seq", items[0].Seq, "count", len(items), "err", err)
				p.probed = false
			} else {
				backoff = 50 * time.Millisecond
				continue // more may be waiting
			}
		}
		if len(items) > 0 {
			retry.Reset(backoff)
			backoff = min(2*backoff, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.ob.Notify():
		case <-p.wake:
			p.probed = false
		case <-retry.C:
		}
	}
}

// flush sends what the outbox holds, confirmed as Run confirms it, until
// it is empty, FlushTimeout passed, the connection is down or a send
// fails: it does not retry, the next agent will.
func (p *Publisher) flush(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FlushTimeout)
	defer cancel()
	for ctx.Err() == nil && p.nc.IsConnected() {
		items := p.ob.Pending(Batch)
		if len(items) == 0 {
			return
		}
		if err := p.send(ctx, items); err != nil {
			p.log.Warn("events not confirmed at shutdown; they wait in the outbox", "from_seq", items[0].Seq, "pending", p.ob.Len(), "err", err)
			return
		}
	}
	if n := p.ob.Len(); n > 0 {
		p.log.Warn("events not published at shutdown; they wait in the outbox", "pending", n)
	}
}

func (p *Publisher) send(ctx context.Context, items []outbox.Item) error {
	// Durable before anyone can see them (see package outbox).
	if err := p.ob.Sync(items); err != nil {
		return err
	}
	if !p.probed {
		p.stream = p.findStream(ctx, items[0].Subject)
		if err := ctx.Err(); err != nil {
			// The lookup was cut short: it says nothing about the
			// stream, and publishing without one (no message ids)
			// would store duplicates in it.
			return err
		}
		p.probed = true
	}
	if p.stream != "" {
		return p.sendJetStream(ctx, items)
	}
	for _, it := range items {
		if err := p.nc.Publish(it.Subject, it.Data); err != nil {
			return err
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.nc.FlushWithContext(fctx); err != nil {
		return err
	}
	return p.ob.Ack(items[len(items)-1].Seq)
}

func (p *Publisher) sendJetStream(ctx context.Context, items []outbox.Item) error {
	js, err := jetstream.New(p.nc)
	if err != nil {
		return err
	}
	for _, it := range items {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// The message id makes a resend after a lost ack a no-op in the
		// stream's duplicate window.
		_, err := js.Publish(pctx, it.Subject, it.Data, jetstream.WithMsgID(p.host+"-"+strconv.FormatUint(it.Seq, 10)))
		cancel()
		if err != nil {
			return err
		}
		if err := p.ob.Ack(it.Seq); err != nil {
			return err
		}
	}
	return nil
}

// findStream returns the JetStream stream capturing subj, or "" when the
// server has no JetStream or no such stream.
func (p *Publisher) findStream(ctx context.Context, subj string) string {
	js, err := jetstream.New(p.nc)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	name, err := js.StreamNameBySubject(ctx, subj)
	if err != nil {
		if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !errors.Is(err, nats.ErrNoResponders) {
			p.log.Debug("no JetStream stream for events", "err", err)
		}
		return ""
	}
	p.log.Info("events go to JetStream", "stream", name)
	return name
}

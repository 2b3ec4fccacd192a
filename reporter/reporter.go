package reporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Publisher sends a message; *nats.Conn satisfies it.
type Publisher interface {
	Publish(subject string, data []byte) error
	// MaxPayload is the largest message the server accepts; <= 0 when
	// not known yet, and then DefaultMaxPayload is assumed.
	MaxPayload() int64
}

// DefaultMaxPayload is the NATS server's default max_payload.
const DefaultMaxPayload = 1 << 20

// Subject is where host's load messages go.
func Subject(host string) string { return "ward." + host + ".load" }

// Options configure a Reporter.
type Options struct {
	HostID    string        // the <host> of the subject; required
	Interval  time.Duration // between samples; required (config.Report.Interval)
	Sampler   *Sampler      // required; the Reporter does not close it
	Source    Source        // the running instances; required
	Publisher Publisher     // nil: sample only (Latest still works)
	Log       *slog.Logger  // nil: slog.Default()
	// Observe, if set, is given every sample and how long taking it took,
	// on the Reporter's goroutine, before it is published.
	Observe func(s *Sample, took time.Duration)
}

// Reporter samples every Interval, keeps the latest sample for cheap
// lookups and publishes it on Subject(HostID).
type Reporter struct {
	opts Options
	seq  uint64
}

// New validates opts.
func New(opts Options) (*Reporter, error) {
	switch {
	case opts.HostID == "":
		return nil, errors.New("reporter: host id: required")
	case strings.ContainsAny(opts.HostID, ".*> \t\r\n"):
		return nil, fmt.Errorf("reporter: host id: %q is not a single NATS subject token", opts.HostID)
	case opts.Interval <= 0:
		return nil, fmt.Errorf("reporter: interval: must be > 0, got %s", opts.Interval)
	case opts.Sampler == nil:
		return nil, errors.New("reporter: sampler: required")
	case opts.Source == nil:
		return nil, errors.New("reporter: source: required")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Reporter{opts: opts}, nil
}

// Latest returns the most recent sample, nil before the first.
func (r *Reporter) Latest() *Sample { return r.opts.Sampler.Latest() }

// Lookup returns instance id's figures from the most recent sample.
func (r *Reporter) Lookup(id string) (*InstanceSample, bool) { return r.opts.Sampler.Lookup(id) }

// Run samples at once (so that Latest is filled and every instance has a
// baseline), then every Interval samples and publishes, until ctx ends.
// The first publication is one Interval after Run starts, so every
// published rate spans a full interval (or an instance's life, for one
// started since).
func (r *Reporter) Run(ctx context.Context) {
	r.sample()
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s := r.sample(); s != nil {
				r.publish(s)
			}
		}
	}
}

func (r *Reporter) sample() *Sample {
	t0 := time.Now()
	s, err := r.opts.Sampler.Sample(r.opts.Source.Instances())
	if err != nil {
		r.opts.Log.Warn("load sample incomplete", "err", err)
	}
	if r.opts.Observe != nil && s != nil {
		r.opts.Observe(s, time.Since(t0))
	}
	return s
}

// connChecker is implemented by *nats.Conn.
type connChecker interface{ IsConnected() bool }

// publish sends s. While the connection is down the sample is dropped, not
// buffered: a load figure delivered after a reconnect would describe a past
// the router should not balance on.
func (r *Reporter) publish(s *Sample) {
	p := r.opts.Publisher
	if p == nil {
		return
	}
	if c, ok := p.(connChecker); ok && !c.IsConnected() {
		return
	}
	maxPayload := int(p.MaxPayload())
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	r.seq++
	msgs, err := EncodeLoad(s, r.seq, maxPayload)
	if err != nil {
		r.opts.Log.Warn("load message incomplete", "err", err)
	}
	subj := Subject(r.opts.HostID)
	for i, m := range msgs {
		if err := p.Publish(subj, m); err != nil {
			r.opts.Log.Warn("load message not published", "seq", r.seq, "part", i+1, "parts", len(msgs), "err", err)
			return
		}
	}
}

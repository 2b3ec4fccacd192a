package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/leakcheck"
)

// The stopping agent's deadlines (cmd/ward: drainTimeout, abandonTimeout):
// requests in flight have drainTimeout to finish before they are answered
// unavailable, and their calls abandonTimeout more to return before the
// agent exits without them.
const (
	agentDrainTimeout   = 15 * time.Second
	agentAbandonTimeout = 5 * time.Second
	// exitMargin covers what follows (agent close, outbox flush, bus
	// drain: a second or so when nothing is stuck) and a loaded machine.
	exitMargin = 5 * time.Second
)

// outcome is what one request got back.
type outcome struct {
	what  string // "bus stop s3", ...
	kind  string // "short", "long" or "start"
	code  api.Code
	inst  *api.Instance
	other error // no answer: a timeout, a reset connection...
}

// TestShutdownAnswersRequestsInFlight: `ward agent` gets SIGTERM with 50
// start and stop requests in flight, half over the bus and half over the
// socket. Every one is answered — its result, or unavailable for the stops
// that outlast the drain deadline — the agent exits within that deadline
// (plus the abandon wait and a margin, well inside systemd's 90 s), and
// the next agent finds every instance in a consistent state, nothing
// leaked.
func TestShutdownAnswersRequestsInFlight(t *testing.T) {
	ns := startNATS(t)
	h := newHost(t)
	h.cfg.NATS.Servers = []string{ns.ClientURL()}
	if err := os.WriteFile(h.cfgPath, []byte(yamlOf(h.cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start("")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()

	// Instances that ignore SIGTERM: a stop waits out its timeout_ms, then
	// kills. "short" ones are stopped within the drain deadline, "long"
	// ones are not.
	stubborn := []string{"sh", "-c", "trap '' TERM; exec sleep 100000"}
	const short, long, starts = 30, 10, 10
	var ids []string
	kindOf := map[string]string{}
	for i := 0; i < short+long; i++ {
		id := fmt.Sprintf("s%02d", i)
		kindOf[id] = "short"
		if i >= short {
			kindOf[id] = "long"
		}
		ids = append(ids, id)
	}
	parallel(t, ids, 8, func(id string) error {
		_, err := h.client.Start(ctx, api.Request{ID: id, Name: "stubborn", Command: stubborn})
		return err
	})

	shortMS, longMS := int64(3000), int64(120_000)
	const answerWait = 40 * time.Second // > drain + abandon: a missing answer is a timeout
	out := make(chan outcome, short+long+starts)
	var sent sync.WaitGroup
	send := func(what, kind string, f func() (*api.Instance, error)) {
		sent.Add(1)
		go func() {
			defer sent.Done()
			inst, err := f()
			o := outcome{what: what, kind: kind, inst: inst}
			var e *api.Error
			if errors.As(err, &e) {
				o.code, o.inst = e.Code, nil
			} else if err != nil {
				o.other, o.inst = err, nil
			}
			out <- o
		}()
	}
	viaBus := func(method string, body any) func() (*api.Instance, error) {
		return func() (*api.Instance, error) {
			b, _ := json.Marshal(body)
			m, err := nc.Request("ward."+h.cfg.HostID+"."+method, b, answerWait)
			if err != nil {
				return nil, err
			}
			if c := m.Header.Get(micro.ErrorCodeHeader); c != "" {
				return nil, &api.Error{Code: api.Code(c), Message: m.Header.Get(micro.ErrorHeader)}
			}
			var inst api.Instance
			if err := json.Unmarshal(m.Data, &inst); err != nil {
				return nil, fmt.Errorf("reply %q: %w", m.Data, err)
			}
			return &inst, nil
		}
	}
	sctx, cancel := context.WithTimeout(ctx, answerWait)
	defer cancel()
	for i, id := range ids {
		ms := shortMS
		if kindOf[id] == "long" {
			ms = longMS
		}
		req := api.StopRequest{ID: id, TimeoutMS: &ms}
		if i%2 == 0 {
			send("bus stop "+id, kindOf[id], viaBus("stop", req))
		} else {
			send("socket stop "+id, kindOf[id], func() (*api.Instance, error) { return h.client.Stop(sctx, req) })
		}
	}
	var started []string
	for i := 0; i < starts; i++ {
		id := fmt.Sprintf("n%02d", i)
		started = append(started, id)
		req := api.Request{ID: id, Name: "fresh", Command: []string{"sleep", "100000"}}
		if i%2 == 0 {
			send("bus start "+id, "start", viaBus("start", req))
		} else {
			send("socket start "+id, "start", func() (*api.Instance, error) { return h.client.Start(sctx, req) })
		}
	}

	// In flight: every stop is under way (stopping), every start taken.
	deadline := time.Now().Add(cgtest.Timeout(20 * time.Second))
	for {
		byID := map[string]api.Instance{}
		for _, in := range h.list() {
			byID[in.ID] = in
		}
		ready := true
		for _, id := range ids {
			ready = ready && byID[id].State == api.StateStopping
		}
		for _, id := range started {
			_, taken := byID[id]
			ready = ready && taken
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests not in flight after 20 s: %+v", byID)
		}
		time.Sleep(20 * time.Millisecond)
	}

	t0 := time.Now()
	h.agent.Process.Signal(syscall.SIGTERM)
	bound := agentDrainTimeout + agentAbandonTimeout + exitMargin
	select {
	case <-h.exited:
	case <-time.After(bound):
		t.Errorf("agent still running %v after SIGTERM", bound)
		h.kill()
	}
	exitedAfter := time.Since(t0)
	if h.agent != nil {
		if st := h.agent.ProcessState; st == nil || !st.Success() {
			t.Errorf("agent exited: %v", st)
		}
		h.agent = nil
	}
	log := h.log.String()
	t.Logf("agent exited %v after SIGTERM", exitedAfter.Round(time.Millisecond))

	sent.Wait()
	close(out)
	got := map[string]int{}
	for o := range out {
		switch {
		case o.other != nil:
			t.Errorf("%s: no answer: %v", o.what, o.other)
		case o.code == api.CodeUnavailable:
			got[o.kind+" unavailable"]++
			if o.kind != "long" {
				t.Errorf("%s: unavailable, though it could finish within the drain deadline", o.what)
			}
		case o.code != "":
			t.Errorf("%s: %s, want a result or unavailable", o.what, o.code)
		case o.kind == "start" && o.inst.State != api.StateRunning,
			o.kind != "start" && o.inst.State != api.StateStopped:
			t.Errorf("%s: answered %s", o.what, o.inst.State)
		default:
			got[o.kind+" result"]++
		}
	}
	t.Logf("answers: %v", got)
	if strings.Contains(log, `msg="NATS disconnected" err=<nil>`) {
		t.Errorf("the agent logged a disconnection without cause:\n%s", log)
	}
	if t.Failed() {
		t.Logf("agent log:\n%s", log)
	}

	// The next agent finishes the stops the last one gave up on: every
	// stopped instance is stopped, every started one runs, nothing else is
	// held.
	h.start("")
	live := map[string]bool{}
	for _, in := range h.list() {
		switch kind := kindOf[in.ID]; {
		case kind != "" && in.State != api.StateStopped:
			t.Errorf("after the restart %s (%s stop) is %s, want stopped", in.ID, kind, in.State)
		case kind == "" && in.State != api.StateRunning:
			t.Errorf("after the restart %s (started) is %s, want running", in.ID, in.State)
		case kind == "":
			live[in.ID] = true
		}
	}
	if len(live) != starts {
		t.Errorf("after the restart %d started instances run, want %d", len(live), starts)
	}
	leakcheck.Check(t, h.cfg, live)
	zero := int64(0)
	for id := range live {
		if _, err := h.client.Stop(ctx, api.StopRequest{ID: id, TimeoutMS: &zero}); err != nil {
			t.Fatal(err)
		}
	}
	leakcheck.Check(t, h.cfg, nil)
}

// parallel calls f for every id, workers at a time, failing t on an error.
func parallel(t *testing.T, ids []string, workers int, f func(id string) error) {
	t.Helper()
	next := make(chan string)
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				if err := f(id); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/latency"
	"github.com/hostward/ward/internal/testagent"
	"github.com/hostward/ward/localapi"
)

// infoBench is an agent running one instance and its reporter, as `ward
// agent` does (info reports the reporter's latest sample as usage), and 8
// clients on connections of their own.
type infoBench struct {
	subj  string
	body  []byte
	conns []*nats.Conn
}

const infoClients = 8

func newInfoBench(b *testing.B) *infoBench {
	ns := runServer(b, nil)
	cfg := testagent.Config(b, testUIDMin+200)
	cfg.NATS.Servers = []string{ns.ClientURL()}
	a := testagent.New(b, cfg)
	wire(b, a, cfg)
	inst, err := a.Start(context.Background(), api.Request{Name: "bench", Command: []string{"sleep", "1000"}})
	if err != nil {
		b.Fatal(err)
	}
	r, err := a.NewReporter(nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go r.Run(ctx)
	for _, ok := r.Lookup(inst.ID); !ok; _, ok = r.Lookup(inst.ID) {
		time.Sleep(time.Millisecond)
	}
	ib := &infoBench{subj: "ward." + cfg.HostID + ".info", conns: make([]*nats.Conn, infoClients)}
	ib.body, _ = json.Marshal(api.InfoRequest{ID: inst.ID})
	for i := range ib.conns {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		ib.conns[i] = nc
	}
	return ib
}

// run sends b.N info requests, client c sending requests c, c+8, ...;
// next(c, k) returns when client c's k-th request is due and the time it
// is measured from.
func (ib *infoBench) run(b *testing.B, next func(c, k int) time.Time) {
	samples := make([]latency.Sample, infoClients)
	var wg sync.WaitGroup
	steal0 := stealTicks(b)
	b.ResetTimer()
	t0 := time.Now()
	for c := range infoClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, k := c, 0; i < b.N; i, k = i+infoClients, k+1 {
				from := next(c, k)
				m, err := ib.conns[c].Request(ib.subj, ib.body, 5*time.Second)
				if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
					b.Errorf("info: %v", err)
					return
				}
				samples[c].Since(from)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	stolen := stealTicks(b).minus(steal0)
	b.StopTimer()
	var all latency.Sample
	for _, s := range samples {
		all = append(all, s...)
	}
	all.Report(b, "info")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	// What the hypervisor took from this VM meanwhile, in % of all its
	// CPUs: stolen time comes in slices of milliseconds, which is what
	// the p99 is made of when it is more than a few percent.
	b.ReportMetric(100*float64(stolen.ticks)/100/elapsed.Seconds()/float64(stolen.cpus), "steal-%")
}

type steal struct{ ticks, cpus int64 }

func (s steal) minus(t steal) steal { return steal{s.ticks - t.ticks, s.cpus} }

// stealTicks is the "steal" column of /proc/stat's cpu line — time, in
// USER_HZ ticks (100 per second), the hypervisor ran something else while
// one of this VM's CPUs wanted to run — and the number of CPUs it sums.
func stealTicks(b *testing.B) steal {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	var s steal
	for i, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
		switch {
		case i == 0:
			if len(f) < 9 || f[0] != "cpu" {
				b.Fatalf("/proc/stat: unexpected first line %q", line)
			}
			if s.ticks, err = strconv.ParseInt(f[8], 10, 64); err != nil {
				b.Fatal(err)
			}
		case len(f) > 0 && strings.HasPrefix(f[0], "cpu"):
			s.cpus++
		}
	}
	return s
}

// BenchmarkInfo: `info` round trips over loopback NATS from 8 concurrent
// clients, each sending its next request as soon as the last is answered:
// the most the agent answers (requests/s), and the latency at that load,
// where every request waits behind the others in the queue.
func BenchmarkInfo(b *testing.B) {
	ib := newInfoBench(b)
	ib.run(b, func(int, int) time.Time { return time.Now() })
}

// BenchmarkInfoAtRate: the same 8 clients sending 2,000 requests/s between
// them (the goal's rate) on a fixed schedule. A request that is already
// due when its predecessor's answer comes is measured from when it was
// due, so the wait the agent caused counts (no coordinated omission); one
// the client had to sleep for is measured from when the client woke, since
// Go's timers may wake it up to a millisecond late, which is the client's
// delay, not the agent's.
func BenchmarkInfoAtRate(b *testing.B) {
	const rate = 2000 // requests/s, all clients together
	ib := newInfoBench(b)
	every := time.Duration(infoClients) * time.Second / rate
	start := time.Now().Add(10 * time.Millisecond)
	ib.run(b, func(c, k int) time.Time {
		// Clients interleave: client c is due c/8 of a period after client 0.
		due := start.Add(time.Duration(k)*every + time.Duration(c)*every/infoClients)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
			return time.Now()
		}
		return due
	})
}

// BenchmarkStartStopTransports: a start+stop cycle through the bus and
// through the local socket, same agent, same run.
func BenchmarkStartStopTransports(b *testing.B) {
	ns := runServer(b, nil)
	cfg := testagent.Config(b, testUIDMin+300)
	cfg.NATS.Servers = []string{ns.ClientURL()}
	a := testagent.New(b, cfg)
	wire(b, a, cfg)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	l, err := localapi.Listen(cfg.Socket)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	srv := localapi.NewServer(a, a.Events(), quiet)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Shutdown(ctx)
		<-served
	}()
	sock := localapi.NewClient(cfg.Socket)
	p := "ward." + cfg.HostID + "."

	viaBus := func(i int) {
		req, _ := json.Marshal(api.Request{ID: fmt.Sprintf("bus-%d", i), Name: "bus", Index: i, Command: []string{"/bin/sleep", "1000"}})
		if m, err := nc.Request(p+"start", req, 10*time.Second); err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
			b.Fatalf("bus start: %v %s", err, m.Data)
		}
		stop, _ := json.Marshal(api.StopRequest{ID: fmt.Sprintf("bus-%d", i)})
		if m, err := nc.Request(p+"stop", stop, 10*time.Second); err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
			b.Fatalf("bus stop: %v %s", err, m.Data)
		}
	}
	viaSocket := func(i int) {
		id := fmt.Sprintf("sock-%d", i)
		if _, err := sock.Start(ctx, api.Request{ID: id, Name: "sock", Index: i, Command: []string{"/bin/sleep", "1000"}}); err != nil {
			b.Fatal(err)
		}
		if _, err := sock.Stop(ctx, api.StopRequest{ID: id}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ { // warm-up
		viaBus(900000 + i)
		viaSocket(900000 + i)
	}
	var busS, sockS latency.Sample
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		viaBus(i)
		busS.Since(t0)
		t0 = time.Now()
		viaSocket(i)
		sockS.Since(t0)
	}
	b.StopTimer()
	busS.Report(b, "bus-cycle")
	sockS.Report(b, "socket-cycle")
}

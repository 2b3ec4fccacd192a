package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/internal/latency"
	"github.com/hostward/ward/internal/testagent"
	"github.com/hostward/ward/localapi"
)

// BenchmarkInfo: `info` round trips over loopback NATS from 8 concurrent
// clients, each on its own connection; reports p50/p99 and requests/s.
func BenchmarkInfo(b *testing.B) {
	ns := runServer(b, nil)
	cfg := testagent.Config(b, testUIDMin+200)
	cfg.NATS.Servers = []string{ns.ClientURL()}
	a := testagent.New(b, cfg)
	wire(b, a, cfg)
	inst, err := a.Start(context.Background(), agent.Request{Name: "bench", Command: []string{"sleep", "1000"}})
	if err != nil {
		b.Fatal(err)
	}
	// As in `ward agent`, the reporter's latest sample is what info
	// reports as usage.
	r, err := a.NewReporter(nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	for _, ok := r.Lookup(inst.ID); !ok; _, ok = r.Lookup(inst.ID) {
		time.Sleep(time.Millisecond)
	}
	body, _ := json.Marshal(agent.InfoRequest{ID: inst.ID})
	subj := "ward." + cfg.HostID + ".info"
	const clients = 8
	conns := make([]*nats.Conn, clients)
	for i := range conns {
		if conns[i], err = nats.Connect(ns.ClientURL()); err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
	}
	samples := make([]latency.Sample, clients)
	var wg sync.WaitGroup
	b.ResetTimer()
	t0 := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < b.N; i += clients {
				s := time.Now()
				m, err := conns[c].Request(subj, body, 5*time.Second)
				if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
					b.Errorf("info: %v", err)
					return
				}
				samples[c].Since(s)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	var all latency.Sample
	for _, s := range samples {
		all = append(all, s...)
	}
	all.Report(b, "info")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go localapi.Serve(ctx, l, localapi.NewHandler(a, a.Events(), quiet))
	sock := localapi.NewClient(cfg.Socket)
	p := "ward." + cfg.HostID + "."

	viaBus := func(i int) {
		req, _ := json.Marshal(agent.Request{ID: fmt.Sprintf("bus-%d", i), Name: "bus", Index: i, Command: []string{"/bin/sleep", "1000"}})
		if m, err := nc.Request(p+"start", req, 10*time.Second); err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
			b.Fatalf("bus start: %v %s", err, m.Data)
		}
		stop, _ := json.Marshal(agent.StopRequest{ID: fmt.Sprintf("bus-%d", i)})
		if m, err := nc.Request(p+"stop", stop, 10*time.Second); err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
			b.Fatalf("bus stop: %v %s", err, m.Data)
		}
	}
	viaSocket := func(i int) {
		id := fmt.Sprintf("sock-%d", i)
		if _, err := sock.Start(ctx, agent.Request{ID: id, Name: "sock", Index: i, Command: []string{"/bin/sleep", "1000"}}); err != nil {
			b.Fatal(err)
		}
		if _, err := sock.Stop(ctx, agent.StopRequest{ID: id}); err != nil {
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

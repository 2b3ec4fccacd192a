package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/testagent"
)

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cluster runs three NATS servers routed to each other on loopback.
func cluster(t testing.TB) []*server.Server {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes string
	for i, p := range ports {
		if i > 0 {
			routes += ","
		}
		routes += "nats-route://127.0.0.1:" + strconv.Itoa(p)
	}
	var srvs []*server.Server
	for i := range ports {
		srvs = append(srvs, runServer(t, &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Cluster:    server.ClusterOpts{Name: "ward-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(routes),
		}))
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range srvs {
		for s.NumRoutes() < 2 {
			if time.Now().After(deadline) {
				t.Fatal("cluster did not form")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return srvs
}

// TestClusterFailover: a client on node C streams start/stop commands while
// the node the agent is connected to is shut down, then another node.
// Every command gets an answer (the client retries on timeout; start is
// idempotent by id, stop by nature), no instance exists twice, and a
// subscriber on C sees every event sequence number 1..N.
func TestClusterFailover(t *testing.T) {
	srvs := cluster(t)
	cfg := testagent.Config(t, testUIDMin+100)
	// Only A is configured, so the agent surely starts there; it learns B
	// and C from the cluster (as a client of a real cluster does).
	cfg.NATS.Servers = []string{srvs[0].ClientURL()}
	a := testagent.New(t, cfg)
	anc := wire(t, a, cfg)

	nodeC := srvs[2]
	sub, err := nats.Connect(nodeC.ClientURL(), nats.DontRandomize(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var mu sync.Mutex
	seen := map[uint64]int{}
	if _, err := sub.Subscribe("ward."+cfg.HostID+".events.>", func(m *nats.Msg) {
		var e api.Event
		if json.Unmarshal(m.Data, &e) == nil {
			mu.Lock()
			seen[e.Seq]++
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	sub.Flush()
	client, err := nats.Connect(nodeC.ClientURL(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// call retries on timeout or no responders (the agent reconnecting).
	call := func(subj string, body any) api.Instance {
		t.Helper()
		b, _ := json.Marshal(body)
		deadline := time.Now().Add(30 * time.Second)
		for {
			m, err := client.Request("ward."+cfg.HostID+"."+subj, b, 2*time.Second)
			if err == nil {
				if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
					t.Fatalf("%s: %s %s", subj, code, m.Data)
				}
				var in api.Instance
				json.Unmarshal(m.Data, &in)
				return in
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no answer in 30 s: %v", subj, err)
			}
		}
	}

	const n = 30
	killed := 0
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("fo-%d", i)
		if in := call("start", api.Request{ID: id, Name: "fo", Index: i, Command: []string{"sleep", "1000"}}); in.State != api.StateRunning {
			t.Fatalf("start %s: %+v", id, in)
		}
		if in := call("stop", api.StopRequest{ID: id}); in.State != api.StateStopped {
			t.Fatalf("stop %s: %+v", id, in)
		}
		if i == n/3 || i == 2*n/3 {
			// Shut down the node the agent uses; if it already sits on C
			// (where the client is), the other node left instead.
			url := anc.ConnectedUrl()
			victim := -1
			for j, s := range srvs[:2] {
				if s.Running() && s.ClientURL() == url {
					victim = j
				}
			}
			if victim < 0 && killed == 1 {
				for j, s := range srvs[:2] {
					if s.Running() {
						victim = j
					}
				}
			}
			if victim < 0 {
				t.Fatalf("agent on %s: no node to shut down", url)
			}
			t.Logf("after command %d: shutting down n%d (agent on %s)", 2*i+2, victim, url)
			srvs[victim].Shutdown()
			killed++
		}
	}
	if killed != 2 {
		t.Fatalf("shut down %d nodes, want 2", killed)
	}
	// Every instance exists once, stopped.
	l, err := a.List(context.Background(), api.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, in := range l.Instances {
		count[in.ID]++
		if in.State != api.StateStopped {
			t.Errorf("%s ended %s", in.ID, in.State)
		}
	}
	if len(count) != n {
		t.Fatalf("%d instances, want %d", len(count), n)
	}
	// Events: started+stopped per instance, numbered 1..2n, all delivered.
	want := uint64(2 * n)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		missing := []uint64{}
		for s := uint64(1); s <= want; s++ {
			if seen[s] == 0 {
				missing = append(missing, s)
			}
		}
		mu.Unlock()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("event seqs never delivered: %v (outbox holds %d)", missing, a.Outbox().Len())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a.Outbox().Last() != want {
		t.Fatalf("last seq %d, want %d", a.Outbox().Last(), want)
	}
}

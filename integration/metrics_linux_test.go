package integration

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/cgtest"
)

// TestMetricsServed: with metrics.listen set, the agent serves Prometheus
// text with each running instance's gauges from the reporter's sample.
func TestMetricsServed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	h := newHost(t)
	yaml := yamlOf(h.cfg) + "report: {interval: 200ms}\nmetrics: {listen: " + addr + "}\n"
	if err := os.WriteFile(h.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start("")
	inst, err := h.client.Start(context.Background(), api.Request{Name: "metered", Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	// A start refused for bad input counts as such.
	if _, err := h.client.Start(context.Background(), api.Request{Name: "", Command: []string{"sleep"}}); err == nil {
		t.Fatal("a start without a name was accepted")
	}
	want := []string{`ward_instance_memory_bytes{id="` + inst.ID + `",index="0",name="metered"}`, "ward_host_cpu_percent ", `ward_instances{state="running"} 1`,
		`ward_instance_starts_total{result="ok"} 1`, `ward_instance_starts_total{result="invalid_argument"} 1`, `ward_events_published_total{kind="started"} 1`}
	deadline := time.Now().Add(10 * time.Second)
	var body string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(body, w)
			}
			if ok {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("metrics never showed %q:\n%.3000s", want, body)
}

// TestBusConnectedMetric: ward_bus_connected follows the agent's bus
// connection — 1 once connected, 0 while the server is down, 1 again after
// the reconnection, which ward_bus_reconnects_total counts. (It used to
// read 0 whatever the connection did.)
func TestBusConnectedMetric(t *testing.T) {
	ns := startNATS(t)
	port := ns.Addr().(*net.TCPAddr).Port
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	h := newHost(t)
	h.cfg.NATS.Servers = []string{ns.ClientURL()}
	yaml := yamlOf(h.cfg) + "metrics: {listen: " + addr + "}\n"
	if err := os.WriteFile(h.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start("")
	waitMetrics(t, addr, "ward_bus_connected 1", "ward_bus_reconnects_total 0")
	ns.Shutdown()
	waitMetrics(t, addr, "ward_bus_connected 0")
	restarted, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go restarted.Start()
	t.Cleanup(restarted.Shutdown)
	waitMetrics(t, addr, "ward_bus_connected 1", "ward_bus_reconnects_total 1")
}

// waitMetrics waits until the agent's metrics on addr show every line of
// want.
func waitMetrics(t *testing.T, addr string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(cgtest.Timeout(15 * time.Second))
	var body string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(body, "\n"+w+"\n")
			}
			if ok {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("metrics never showed %q:\n%.3000s", want, body)
}

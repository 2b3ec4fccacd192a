package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/latency"
	"github.com/hostward/ward/internal/leakcheck"
	"github.com/hostward/ward/internal/testagent"
	"github.com/hostward/ward/reporter"
)

// The scale benchmark's slice of the host: its own uids and ports, apart
// from every test's.
const (
	scaleUIDMin     = 30000
	scaleUIDMax     = 32999
	scalePortMin    = 46000
	scalePortMax    = 48998
	scaleMetrics    = "127.0.0.1:48999"
	scaleInFlight   = 8 // bus requests at once, start and stop alike
	scaleWindow     = 30 * time.Second
	scaleInterval   = 2 * time.Second
	scaleMemory     = 16 << 20
	scalePids       = 16
	scaleInstances  = 2000
	scaleCountEnv   = "WARD_SCALE_INSTANCES" // another count, e.g. for a quick look
	userHZ          = 100                    // clock ticks per second in /proc/<pid>/stat on Linux
	scaleReqTimeout = 60 * time.Second
	scaleSingles    = 50 // starts one at a time, before and beside the n
)

// BenchmarkScale runs the real agent with 2,000 sleeping instances (16 MiB,
// 16 pids each) and reporting on: the time to start them all over the bus
// (8 requests in flight) and each start's latency, single starts with
// nothing running and beside all of them, the agent's RSS and CPU
// over 30 s of steady state while a subscriber checks that every load
// sample names all of them, the reporter's time per sample, the time to
// stop them all, and then the leak scan, which must come back empty. It
// runs the scenario once, whatever b.N: use -benchtime 1x.
func BenchmarkScale(b *testing.B) {
	n := scaleInstances
	if s := os.Getenv(scaleCountEnv); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > scaleUIDMax-scaleUIDMin+1 {
			b.Fatalf("%s=%q: want 1..%d", scaleCountEnv, s, scaleUIDMax-scaleUIDMin+1)
		}
		n = v
	}
	ns := startNATS(b)
	cfg := testagent.Config(b, scaleUIDMin)
	cfg.Users.UIDMax = scaleUIDMax
	cfg.Ports.Min, cfg.Ports.Max = scalePortMin, scalePortMax
	cfg.NATS.Servers = []string{ns.ClientURL()}
	cfgPath := filepath.Join(filepath.Dir(cfg.StateDir), "ward.yaml")
	yaml := fmt.Sprintf(`host_id: %s
state_dir: %s
socket: %s
cgroup: {parent: %s}
users: {uid_min: %d, uid_max: %d, group: ward, gid: %d}
ports: {min: %d, max: %d}
defaults: {memory_bytes: %d, pids: %d}
nats: {servers: [%s]}
report: {interval: %s}
oom: {policy: kill}
metrics: {listen: %s}
`, cfg.HostID, cfg.StateDir, cfg.Socket, cfg.Cgroup.Parent, cfg.Users.UIDMin, cfg.Users.UIDMax, cfg.Users.GID,
		cfg.Ports.Min, cfg.Ports.Max, scaleMemory, scalePids, ns.ClientURL(), scaleInterval, scaleMetrics)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	loads := newLoadWatch(b, nc, cfg.HostID)

	ag := startScaleAgent(b, cfgPath)
	subj := "ward." + cfg.HostID + "."
	mem, pids := int64(scaleMemory), int64(scalePids)
	request := func(verb string, body any) error {
		data, _ := json.Marshal(body)
		m, err := nc.Request(subj+verb, data, scaleReqTimeout)
		if err != nil {
			return err
		}
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
			return fmt.Errorf("%s: %s", code, m.Data)
		}
		var in api.Instance
		if err := json.Unmarshal(m.Data, &in); err != nil {
			return fmt.Errorf("reply %.200q: %w", m.Data, err)
		}
		if want := map[string]api.State{"start": api.StateRunning, "stop": api.StateStopped}[verb]; in.State != want {
			return fmt.Errorf("%s is %s, want %s (%s)", in.ID, in.State, want, in.Reason)
		}
		return nil
	}
	id := func(i int) string { return fmt.Sprintf("scale-%04d", i) }
	// One start at a time, each stopped again: the latency of a single
	// start (the earlier goals' figure), here with nothing running and
	// later beside all n.
	single := func(tag string) latency.Sample {
		var s latency.Sample
		for i := 0; i < scaleSingles; i++ {
			sid := fmt.Sprintf("single-%s-%02d", tag, i)
			t0 := time.Now()
			if err := request("start", api.Request{ID: sid, Name: "single", Index: i, Command: []string{"/bin/sleep", "100000"},
				Limits: api.Limits{MemoryBytes: &mem, Pids: &pids}}); err != nil {
				b.Fatalf("single start %s: %v", sid, err)
			}
			s.Since(t0)
			if err := request("stop", api.StopRequest{ID: sid}); err != nil {
				b.Fatalf("single stop %s: %v", sid, err)
			}
		}
		return s
	}
	idle := single("idle")

	b.ResetTimer() // (which also drops metrics reported so far)
	b.ReportMetric(ms(idle.Percentile(50)), "idle_start_p50_ms")
	b.ReportMetric(ms(idle.Percentile(99)), "idle_start_p99_ms")
	startAll, starts, err := fanOut(n, func(i int) error {
		return request("start", api.Request{ID: id(i), Name: "scale", Index: i, Command: []string{"/bin/sleep", "100000"},
			Limits: api.Limits{MemoryBytes: &mem, Pids: &pids}})
	})
	if err != nil {
		b.Fatalf("starting %d instances: %v\n%s", n, err, ag.logTail())
	}
	b.ReportMetric(startAll.Seconds(), "start_all_s")
	b.ReportMetric(ms(starts.Percentile(50)), "start_p50_ms")
	b.ReportMetric(ms(starts.Percentile(99)), "start_p99_ms")
	b.Logf("%d instances started in %s (p50 %s, p99 %s; p50 ms by eighths: %s), %d fds in the agent", n, startAll.Round(time.Millisecond),
		starts.Percentile(50), starts.Percentile(99), byBlock(starts), ag.fds())

	// A controller reconciling the host asks for the whole list. Past
	// about 1,700 instances one reply would exceed the bus's max payload:
	// it must be refused at once, and pages must carry the list.
	if m, err := nc.Request(subj+"list", []byte("{}"), 10*time.Second); err != nil {
		b.Errorf("bus list of %d instances in one reply: %v", n, err)
	} else if code := m.Header.Get("Nats-Service-Error-Code"); code != "" && code != string(api.CodeResourceExhausted) {
		b.Errorf("bus list of %d instances in one reply: %s %s", n, code, m.Header.Get("Nats-Service-Error"))
	}
	t0 := time.Now()
	listed, running, size, err := listPaged(nc, subj, 500)
	if err != nil || running != n {
		b.Errorf("paged bus list: %d of %d instances running: %v", running, n, err)
	}
	b.ReportMetric(ms(time.Since(t0)), "list_ms")
	b.Logf("paged list of %d instances (%d running, the rest recently stopped) in %s, %d bytes an instance",
		listed, running, time.Since(t0).Round(time.Millisecond), size/max(listed, 1))

	// Steady state: from the first sample that names every instance, a
	// window of whole report intervals.
	if err := loads.waitFull(n, 3*scaleInterval+10*time.Second); err != nil {
		b.Fatalf("%v\n%s", err, ag.logTail())
	}
	full0 := loads.fullSamples(n)
	sum0, cnt0 := scrapeSampleDuration(b)
	cpu0 := ag.cpuTicks()
	t0 = time.Now()
	time.Sleep(scaleWindow)
	cpu1, elapsed := ag.cpuTicks(), time.Since(t0)
	sum1, cnt1 := scrapeSampleDuration(b)
	full := loads.fullSamples(n) - full0
	rss, hwm := ag.memory()
	cpuPct := float64(cpu1-cpu0) / userHZ / elapsed.Seconds() * 100
	b.ReportMetric(rss/1e6, "rss_MB")
	b.ReportMetric(hwm/1e6, "hwm_MB")
	b.ReportMetric(cpuPct, "cpu_pct")
	b.ReportMetric(float64(ag.fds()), "agent_fds")
	if cnt1 > cnt0 {
		per := (sum1 - sum0) / (cnt1 - cnt0)
		b.ReportMetric(per*1e3, "sample_ms")
		b.ReportMetric(per*1e6/float64(n), "sample_us/inst")
	}
	// The window spans scaleWindow/scaleInterval intervals; allow for
	// the edges.
	if want := int(scaleWindow/scaleInterval) - 2; full < want {
		b.Errorf("%d load samples naming all %d instances in %s, want at least %d (last: %s)", full, n, elapsed.Round(time.Millisecond), want, loads.last())
	}
	g := scrape(b)
	b.Logf("steady state over %s: %.2f%% of a core, RSS %.1f MB (peak %.1f MB; Go heap in use %.1f MB, stacks %.1f MB, %.0f goroutines), %d full load samples of %d instances",
		elapsed.Round(time.Millisecond), cpuPct, rss/1e6, hwm/1e6, g["go_memstats_heap_inuse_bytes"]/1e6, g["go_memstats_stack_inuse_bytes"]/1e6, g["go_goroutines"], full, n)

	loaded := single("loaded")
	b.ReportMetric(ms(loaded.Percentile(50)), "loaded_start_p50_ms")
	b.ReportMetric(ms(loaded.Percentile(99)), "loaded_start_p99_ms")
	b.Logf("single starts over the bus, p50/p99: %s / %s with nothing running, %s / %s beside %d instances",
		idle.Percentile(50), idle.Percentile(99), loaded.Percentile(50), loaded.Percentile(99), n)

	stopAll, stops, err := fanOut(n, func(i int) error { return request("stop", api.StopRequest{ID: id(i)}) })
	if err != nil {
		b.Fatalf("stopping %d instances: %v\n%s", n, err, ag.logTail())
	}
	b.StopTimer()
	b.ReportMetric(stopAll.Seconds(), "stop_all_s")
	b.ReportMetric(ms(stops.Percentile(50)), "stop_p50_ms")
	b.ReportMetric(ms(stops.Percentile(99)), "stop_p99_ms")

	leaks := scanLeaks(cfg)
	for _, l := range leaks {
		b.Error("leak: " + l)
	}
	b.ReportMetric(float64(len(leaks)), "leaks")
	if err := ag.stop(); err != nil {
		b.Errorf("agent: %v\n%s", err, ag.logTail())
	}
	b.Logf("%d instances stopped in %s (p50 %s, p99 %s; p50 ms by eighths: %s); %d leaks", n, stopAll.Round(time.Millisecond),
		stops.Percentile(50), stops.Percentile(99), byBlock(stops), len(leaks))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// listPaged lists every instance over the bus, limit at a time, and
// returns how many it got, how many of them run, and the bytes of the
// replies.
func listPaged(nc *nats.Conn, subj string, limit int) (n, running, size int, err error) {
	req := api.ListRequest{Limit: limit}
	seen := map[string]bool{}
	for {
		body, _ := json.Marshal(req)
		m, err := nc.Request(subj+"list", body, scaleReqTimeout)
		if err != nil {
			return len(seen), running, size, err
		}
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
			return len(seen), running, size, fmt.Errorf("%s: %s", code, m.Header.Get("Nats-Service-Error"))
		}
		var l api.List
		if err := json.Unmarshal(m.Data, &l); err != nil {
			return len(seen), running, size, err
		}
		size += len(m.Data)
		for _, in := range l.Instances {
			if seen[in.ID] {
				return len(seen), running, size, fmt.Errorf("%s listed twice", in.ID)
			}
			seen[in.ID] = true
			if in.State == api.StateRunning {
				running++
			}
		}
		if l.Next == "" {
			return len(seen), running, size, nil
		}
		req.After = l.Next
	}
}

// fanOut calls fn(0..n-1) from scaleInFlight goroutines and returns the
// time it all took, each call's latency and the first error (after which
// no new call begins).
func fanOut(n int, fn func(i int) error) (time.Duration, latency.Sample, error) {
	next := make(chan int)
	var (
		mu    sync.Mutex
		all   = make(latency.Sample, n)
		done  int
		first error
		wg    sync.WaitGroup
	)
	t0 := time.Now()
	for w := 0; w < scaleInFlight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c0 := time.Now()
				err := fn(i)
				d := time.Since(c0)
				mu.Lock()
				all[i] = d
				done++
				if err != nil && first == nil {
					first = fmt.Errorf("#%d: %w", i, err)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(t0), all[:done], first
}

// byBlock renders the median latency of each block of calls, in call
// order: how the latency moves as the instance count grows.
func byBlock(s latency.Sample) string {
	const blocks = 8
	var out []string
	for k := 0; k < blocks; k++ {
		part := s[k*len(s)/blocks : (k+1)*len(s)/blocks]
		if len(part) > 0 {
			out = append(out, fmt.Sprintf("%.1f", ms(part.Percentile(50))))
		}
	}
	return strings.Join(out, " ")
}

// scaleAgent is the `ward agent` process under measurement.
type scaleAgent struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *syncBuffer
}

func startScaleAgent(b *testing.B, cfgPath string) *scaleAgent {
	b.Helper()
	a := &scaleAgent{cmd: exec.Command(wardBin, "agent", "--config", cfgPath), exited: make(chan struct{}), log: new(syncBuffer)}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.exited) }()
	// Registered after testagent's cleanup, so it runs before it: the
	// agent is gone before its cgroup parent and state are removed
	// (whatever still runs in the parent is killed with it).
	b.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGKILL)
		<-a.exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(a.log.String(), "agent ready") {
		select {
		case <-a.exited:
			b.Fatalf("agent exited during startup:\n%s", a.log)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("agent not ready:\n%s", a.log)
		}
	}
	return a
}

// stop ends the agent as its service manager would, with SIGTERM.
func (a *scaleAgent) stop() error {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		return fmt.Errorf("still running 20 s after SIGTERM")
	}
	if st := a.cmd.ProcessState; !st.Success() {
		return fmt.Errorf("exited: %v", st)
	}
	return nil
}

func (a *scaleAgent) logTail() string {
	s := a.log.String()
	return s[max(0, len(s)-4000):]
}

// cpuTicks is the agent's user+system CPU time in clock ticks.
func (a *scaleAgent) cpuTicks() uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", a.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ut + st
}

// memory returns the agent's VmRSS and VmHWM in bytes.
func (a *scaleAgent) memory() (rss, hwm float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kb * 1024
		case "VmHWM":
			hwm = kb * 1024
		}
	}
	return rss, hwm
}

func (a *scaleAgent) fds() int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", a.cmd.Process.Pid))
	return len(ents)
}

// scrape reads the agent's unlabelled metrics.
func scrape(b *testing.B) map[string]float64 {
	b.Helper()
	resp, err := http.Get("http://" + scaleMetrics + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			m[name] = x
		}
	}
	return m
}

// scrapeSampleDuration reads the sum and count of the agent's
// ward_sample_duration_seconds histogram.
func scrapeSampleDuration(b *testing.B) (sum, count float64) {
	m := scrape(b)
	return m["ward_sample_duration_seconds_sum"], m["ward_sample_duration_seconds_count"]
}

// scanLeaks returns what the leak scanner still finds after a grace for
// releases, which run right after an exit, asynchronously.
func scanLeaks(cfg *config.Config) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaks := leakcheck.Find(cfg, nil)
		if len(leaks) == 0 || time.Now().After(deadline) {
			return leaks
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loadWatch assembles the agent's load messages (a sample may come in
// parts) and counts the samples that name a given number of instances.
type loadWatch struct {
	mu      sync.Mutex
	parts   map[uint64]map[int]int // seq → part → instances in it
	whole   map[uint64]int         // complete samples: seq → instances
	lastMsg string
	changed chan struct{}
}

func newLoadWatch(b *testing.B, nc *nats.Conn, host string) *loadWatch {
	b.Helper()
	w := &loadWatch{parts: map[uint64]map[int]int{}, whole: map[uint64]int{}, changed: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(reporter.Subject(host), func(m *nats.Msg) {
		var lm reporter.LoadMessage
		if err := json.Unmarshal(m.Data, &lm); err != nil {
			w.mu.Lock()
			w.lastMsg = fmt.Sprintf("undecodable (%v): %.200q", err, m.Data)
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.lastMsg = fmt.Sprintf("seq %d part %d/%d, %d instances", lm.Seq, lm.Part, lm.Parts, len(lm.Instances))
		p := w.parts[lm.Seq]
		if p == nil {
			p = map[int]int{}
			w.parts[lm.Seq] = p
		}
		p[lm.Part] = len(lm.Instances)
		if len(p) == lm.Parts {
			total := 0
			for _, c := range p {
				total += c
			}
			w.whole[lm.Seq] = total
			delete(w.parts, lm.Seq)
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	// Load messages are large and frequent; the default pending limits
	// would drop some while the benchmark is busy elsewhere.
	sub.SetPendingLimits(-1, -1)
	b.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return w
}

func (w *loadWatch) fullSamples(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := 0
	for _, got := range w.whole {
		if got == n {
			c++
		}
	}
	return c
}

func (w *loadWatch) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastMsg
}

func (w *loadWatch) waitFull(n int, timeout time.Duration) error {
	deadline := time.After(timeout)
	for w.fullSamples(n) == 0 {
		select {
		case <-w.changed:
		case <-deadline:
			return fmt.Errorf("no load sample named all %d instances within %s (last: %s)", n, timeout, w.last())
		}
	}
	return nil
}

// syncBuffer is a bytes.Buffer the agent's output copier and the
// benchmark can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

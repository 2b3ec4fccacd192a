package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/bus"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/tasks"
	"github.com/hostward/ward/localapi"
	"github.com/hostward/ward/metrics"
	"github.com/hostward/ward/router"
)

func runAgent(args []string, stdout, stderr io.Writer) error {
	fset := newFlags("agent", "[--config FILE] [--dev] [--host-id ID] [--state-dir DIR] [--socket PATH] [--nats URL[,URL...]]", stderr)
	cfgPath := fset.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists)")
	dev := fset.Bool("dev", false, "development mode: no config file, state under a temp dir, cgroup parent /ward-dev")
	hostID := fset.String("host-id", "", "override host_id")
	stateDir := fset.String("state-dir", "", "override state_dir")
	socket := fset.String("socket", "", "override socket")
	natsURLs := fset.String("nats", "", "override nats.servers (comma-separated)")
	logLevel := fset.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fset, args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return usagef("unexpected argument %q", fset.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("--log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := loadConfig(*cfgPath, *dev)
	if err != nil {
		return err
	}
	if *hostID != "" {
		cfg.HostID = *hostID
	}
	if *stateDir != "" {
		cfg.StateDir = *stateDir
	}
	if *socket != "" {
		cfg.Socket = *socket
	}
	if *natsURLs != "" {
		cfg.NATS.Servers = strings.Split(*natsURLs, ",")
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("the agent must run as root: it creates cgroups and runs instances as pool users")
	}
	// From here a SIGTERM is a shutdown, even one during the setup.
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &daemon{log: log}
	if err := d.setup(cfg, *dev, *dev && *natsURLs == ""); err != nil {
		d.shutdown()
		return err
	}
	log.Info("agent ready", "host", cfg.HostID, "socket", cfg.Socket, "state_dir", cfg.StateDir,
		"cgroup", d.a.CgroupMode().String()+":"+cfg.Cgroup.Parent)
	var serveErr error
	select {
	case <-sig.Done():
		// A second signal is not caught: it ends the agent at once.
		stop()
		log.Info("stopping: no new requests; answering those in flight", "drain_timeout", drainTimeout)
	case serveErr = <-d.serveErr:
		log.Error("the socket stopped serving; stopping", "err", serveErr)
	}
	d.shutdown()
	// Instances keep running: a restarted agent re-adopts them.
	log.Info("agent stopped; instances keep running")
	return serveErr
}

// How long a stopping agent waits. ward.service gives it TimeoutStopSec=45s
// before systemd SIGKILLs it: the sum of these (at most about 35 s) stays
// inside that, and a SIGKILL — which the agent survives too, but which
// answers nobody — is never needed.
const (
	// drainTimeout is how long requests in flight have to finish once
	// the agent stops taking new ones; each still running then is
	// answered unavailable. A stop waits out its instance's grace period
	// (stop.timeout, 10 s by default), so this is longer than that.
	drainTimeout = 15 * time.Second
	// abandonTimeout is how long, after the drain deadline cancelled the
	// requests still running, the agent waits for their calls to return
	// before it exits without them: the next agent finishes what they
	// left half done, as after a crash.
	abandonTimeout = 5 * time.Second
	// connCloseTimeout bounds the drain of the bus connection, last.
	connCloseTimeout = 2 * time.Second
	// The metrics server's grace (metrics.Serve) and the outbox flush
	// (bus.FlushTimeout) come in between, 5 s each at most.
)

// daemon is what `ward agent` runs. Every goroutine it starts belongs to
// one of its task groups, which shutdown joins phase by phase.
type daemon struct {
	log     *slog.Logger
	devNATS *server.Server
	nc      *nats.Conn
	routes  *router.Registrar
	a       *agent.Agent
	svc     *bus.Service
	api     *localapi.Server

	// serving: the socket's server. Its error, if it stops on its own,
	// goes to serveErr.
	serving  tasks.Group[string]
	serveErr chan error
	// workers: the agent's periodic work, the reporter, the metrics
	// server; stopped by cancelWork once the requests are answered.
	workers    tasks.Group[string]
	cancelWork context.CancelFunc
	// publishing: the outbox publisher, and what tells it of reconnects;
	// stopped last, by cancelPublish, so that it flushes what the
	// requests and the agent's shutdown emitted.
	publishing    tasks.Group[string]
	cancelPublish context.CancelFunc
}

// setup starts everything, in the order that lets each part be given what
// it needs when it is made: nothing is handed over once it runs.
func (d *daemon) setup(cfg *config.Config, dev, devNATS bool) error {
	log := d.log
	workCtx, cancelWork := context.WithCancel(context.Background())
	d.cancelWork = cancelWork
	pubCtx, cancelPublish := context.WithCancel(context.Background())
	d.cancelPublish = cancelPublish
	d.serveErr = make(chan error, 1)

	if devNATS {
		ns, err := startDevNATS()
		if err != nil {
			return err
		}
		d.devNATS = ns
		log.Info("embedded NATS server (--dev)", "url", ns.ClientURL())
	}
	// The counters exist before the agent, which is given them, and before
	// the connection, whose handlers set ward_bus_connected. nil (metrics
	// off) is safe to call.
	var self *metrics.Self
	var counters agent.Counters
	if cfg.Metrics.Listen != "" {
		var err error
		if self, err = metrics.New(metrics.Options{}); err != nil {
			return err
		}
		counters = self
	}
	// The handlers use only what exists now: a reconnection is passed on
	// through this channel to the publisher and the registrar made after.
	reconnected := make(chan struct{}, 1)
	nc, err := bus.Connect(bus.ConnOptions{HostID: cfg.HostID, NATS: cfg.NATS, Log: log,
		OnConnected: self.SetBusConnected,
		OnReconnect: func() {
			self.BusReconnected()
			select {
			case reconnected <- struct{}{}:
			default: // one is pending: the publisher and registrar act on it once
			}
		}})
	if err != nil {
		return err
	}
	d.nc = nc
	if d.routes, err = newRegistrar(nc, dev, log); err != nil {
		return err
	}
	if err := d.routes.Start(workCtx); err != nil {
		return err
	}
	if d.a, err = agent.New(agent.Options{Config: cfg, Logger: log, Counters: counters, Routes: d.routes}); err != nil {
		return err
	}
	a := d.a
	pub := bus.NewPublisher(nc, a.Outbox(), cfg.HostID, log)
	d.publishing.Go("publisher", func() { pub.Run(pubCtx) })
	d.publishing.Go("reconnects", func() {
		for {
			select {
			case <-pubCtx.Done():
				return
			case <-reconnected:
				pub.Reconnected()
				d.routes.Reconnected()
			}
		}
	})
	rep, err := a.NewReporter(nc)
	if err != nil {
		return err
	}
	d.workers.Go("reporter", func() { rep.Run(workCtx) })
	if self != nil {
		if err := self.AddSources(metrics.Options{Samples: rep, OutboxPending: a.Outbox().Len, InstancesByState: a.CountByState}); err != nil {
			return err
		}
		srv, err := metrics.Listen(cfg.Metrics.Listen, self.Registry())
		if err != nil {
			return err
		}
		d.workers.Go("metrics", func() {
			if err := srv.Serve(workCtx); err != nil {
				log.Warn("metrics server", "err", err)
			}
		})
		log.Info("metrics", "listen", srv.Addr().String())
	}
	d.workers.Go("agent", func() { a.Run(workCtx) })
	if d.svc, err = bus.NewService(nc, a, bus.ServiceOptions{HostID: cfg.HostID, Version: version, Log: log}); err != nil {
		return err
	}
	l, err := localapi.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	d.api = localapi.NewServer(a, a.Events(), log)
	d.serving.Go("socket", func() {
		if err := d.api.Serve(l); err != nil {
			d.serveErr <- err
		}
	})
	return nil
}

// shutdown stops what setup started, in order: stop taking requests, on
// the bus and the socket; answer those in flight (each with its result, or
// unavailable at drainTimeout); stop the agent's periodic work and
// watchers; flush the outbox; close the connection; the embedded NATS
// server last. It copes with a setup that stopped half-way.
func (d *daemon) shutdown() {
	log := d.log
	// Both transports stop taking requests at once, then drain in
	// parallel: neither's drain delays the other's stop.
	var draining tasks.Group[string]
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if d.svc != nil {
		draining.Go("bus", func() {
			if err := d.svc.Shutdown(drainCtx); err != nil {
				log.Warn("bus service shutdown", "err", err)
			}
		})
	}
	if d.api != nil {
		draining.Go("socket", func() {
			if err := d.api.Shutdown(drainCtx); err != nil {
				log.Warn("socket shutdown", "err", err)
			}
		})
	}
	draining.Wait(context.Background())  // bounded by drainCtx
	d.serving.Wait(context.Background()) // the socket's Serve returns as Shutdown begins
	// Every request is answered; their calls were cancelled at the
	// deadline. One still in the agent then ignores cancellation: wait a
	// little, then go without it rather than outstay the stop timeout.
	abandonCtx, cancelAbandon := context.WithTimeout(context.Background(), abandonTimeout)
	defer cancelAbandon()
	inAgent := false
	joinCalls := func(wait func(context.Context) error) {
		if err := wait(abandonCtx); err != nil {
			log.Warn("requests still running in the agent; exiting without them, the next agent finishes what they left", "err", err)
			inAgent = true
		}
	}
	if d.svc != nil {
		joinCalls(d.svc.Wait)
	}
	if d.api != nil {
		joinCalls(d.api.Wait)
	}
	d.cancelWork()
	d.workers.Wait(context.Background()) // each returns promptly; metrics within its grace
	if d.routes != nil {
		d.routes.Close()
	}
	if d.a != nil {
		if inAgent {
			// Closing the agent under a call would pull its watchers
			// out from under it; the process exit releases the locks.
			log.Warn("agent left open: calls still running in it")
		} else if err := d.a.Close(); err != nil {
			log.Warn("closing the agent", "err", err)
		}
	}
	d.cancelPublish()
	d.publishing.Wait(context.Background()) // bounded by bus.FlushTimeout
	if d.nc != nil {
		// Drained, not just closed: a request the service's drained
		// subscription still delivers is answered unavailable before
		// the connection goes.
		if err := bus.Close(d.nc, connCloseTimeout); err != nil {
			log.Warn("closing the bus connection", "err", err)
		}
	}
	if d.devNATS != nil {
		d.devNATS.Shutdown()
	}
}

// loadConfig returns the --dev profile, the given file, or the default file
// when it exists (defaults otherwise: every key has one).
func loadConfig(path string, dev bool) (*config.Config, error) {
	if dev {
		if path != "" {
			return nil, usagef("--dev takes no --config")
		}
		dir := filepath.Join(os.TempDir(), "ward-dev")
		if err := checkDevDir(dir); err != nil {
			return nil, err
		}
		return config.Dev(dir), nil
	}
	if path != "" {
		return config.Load(path)
	}
	cfg, err := config.Load(config.DefaultPath)
	if errors.Is(err, fs.ErrNotExist) {
		return config.Default(), nil
	}
	return cfg, err
}

// checkDevDir refuses a --dev state dir someone else could have prepared:
// it lives in a world-writable /tmp, and the agent (root) would follow a
// symlink there or use a directory another user controls.
func checkDevDir(dir string) error {
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || sys.Uid != 0 || st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("--dev state dir %s is not a root-owned directory writable only by root; remove it", dir)
	}
	return nil
}

// newRegistrar announces routes to gorouters at the host's first
// non-loopback IPv4 address; a host without one (and --dev) announces
// 127.0.0.1, which only a router on the same host can use.
func newRegistrar(nc *nats.Conn, dev bool, log *slog.Logger) (*router.Registrar, error) {
	host := ""
	if dev {
		host = "127.0.0.1"
	}
	r, err := router.New(nc, router.Options{Host: host, Log: log})
	if errors.Is(err, router.ErrNoHostAddress) {
		log.Warn("no non-loopback IPv4 address: routes are announced at 127.0.0.1")
		r, err = router.New(nc, router.Options{Host: "127.0.0.1", Log: log})
	}
	return r, err
}

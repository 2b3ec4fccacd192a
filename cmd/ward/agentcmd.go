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
	"sync/atomic"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/bus"
	"github.com/hostward/ward/config"
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
	if *dev && *natsURLs == "" {
		ns, err := startDevNATS()
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		log.Info("embedded NATS server (--dev)", "url", ns.ClientURL())
	}

	a, err := agent.New(agent.Options{Config: cfg, Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	var pub *bus.Publisher
	var routes *router.Registrar
	var self atomic.Pointer[metrics.Self] // nil (metrics off) is safe to call
	nc, err := bus.Connect(bus.ConnOptions{HostID: cfg.HostID, NATS: cfg.NATS, Log: log, OnReconnect: func() {
		if pub != nil {
			pub.Reconnected()
		}
		if routes != nil {
			routes.Reconnected()
		}
		self.Load().BusReconnected()
	}})
	if err != nil {
		return err
	}
	defer nc.Close()
	pub = bus.NewPublisher(nc, a.Outbox(), cfg.HostID, log)
	if routes, err = newRegistrar(nc, *dev, log); err != nil {
		return err
	}
	defer routes.Close()
	rep, err := a.NewReporter(nc)
	if err != nil {
		return err
	}
	svc, err := bus.NewService(nc, a, bus.ServiceOptions{HostID: cfg.HostID, Version: version, Log: log})
	if err != nil {
		return err
	}
	defer svc.Stop()
	l, err := localapi.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Socket)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("agent ready", "host", cfg.HostID, "socket", cfg.Socket, "state_dir", cfg.StateDir,
		"cgroup", a.CgroupMode().String()+":"+cfg.Cgroup.Parent)
	go a.Run(ctx)
	go pub.Run(ctx)
	go rep.Run(ctx)
	if cfg.Metrics.Listen != "" {
		m, err := metrics.New(metrics.Options{Samples: rep, OutboxPending: a.Outbox().Len, InstancesByState: a.CountByState})
		if err != nil {
			return err
		}
		self.Store(m)
		a.SetCounters(m)
		srv, err := metrics.Listen(cfg.Metrics.Listen, m.Registry())
		if err != nil {
			return err
		}
		go srv.Serve(ctx)
		log.Info("metrics", "listen", srv.Addr().String())
	}
	if err := routes.Start(ctx); err != nil {
		return err
	}
	a.SetRoutes(routes)
	err = localapi.Serve(ctx, l, localapi.NewHandler(a, a.Events(), log))
	// Instances keep running: a restarted agent re-adopts them.
	log.Info("agent stopped; instances keep running")
	return err
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

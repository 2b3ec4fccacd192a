package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/config"
)

// ErrCredentials is a startup failure the bus will keep refusing: wrong or
// unreadable credentials, or TLS that fails verification.
var ErrCredentials = errors.New("bus: the NATS servers refuse this agent's credentials")

// ConnOptions configure Connect.
type ConnOptions struct {
	HostID string
	NATS   config.NATS
	Log    *slog.Logger
	// FirstTimeout bounds the first, synchronous connection attempt that
	// tells bad credentials from an unreachable bus (default 3 s).
	FirstTimeout time.Duration
	// OnReconnect, if set, is called after every reconnection.
	OnReconnect func()
	// OnConnected, if set, is told whenever the connection comes up
	// (true: connected, reconnected) or goes down (false: disconnected,
	// closed), for ward_bus_connected.
	OnConnected func(up bool)
	// The callbacks run on the connection's callback goroutine, one at a
	// time and in order; whatever they use must exist before Connect is
	// called, since they may run before it returns.
}

// Connect opens the agent's connection. It fails only on configuration
// the servers will never accept (ErrCredentials, missing files); an
// unreachable bus yields a connection that keeps retrying in the
// background.
func Connect(o ConnOptions) (*nats.Conn, error) {
	opts, err := natsOptions(o)
	if err != nil {
		return nil, err
	}
	handlers := connHandlers(o)
	servers := strings.Join(o.NATS.Servers, ",")
	first := o.FirstTimeout
	if first == 0 {
		first = 3 * time.Second
	}
	// One plain attempt first: its error says whether the servers are
	// unreachable (fine, retry in the background) or refuse us (fatal).
	// It has none of the handlers: it is closed on purpose, which is no
	// disconnection to log or count.
	nc, err := nats.Connect(servers, append(opts, nats.Timeout(first), nats.MaxReconnects(0), nats.NoReconnect())...)
	if err == nil {
		// With TLS 1.3 a server rejects a client certificate only after
		// the client's handshake is done: a round trip tells.
		if ferr := nc.FlushTimeout(first); ferr != nil {
			err = ferr
			if last := nc.LastError(); last != nil {
				err = last
			}
		}
		nc.Close()
	}
	if err != nil && refused(err) {
		return nil, fmt.Errorf("%w: %v (check nats.user/password, token, nkey_seed_file, creds_file and tls in the config)", ErrCredentials, err)
	} else if err != nil {
		o.Log.Warn("NATS unreachable; the agent runs on and keeps trying", "servers", servers, "err", err)
	}
	nc, err = nats.Connect(servers, append(append(opts, handlers...), nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	return nc, nil
}

// Close drains nc and closes it, waiting at most timeout: the
// subscriptions first deliver the messages they hold (a request the
// Service receives after its Shutdown is answered unavailable), then what
// was published is flushed. Close(nc) alone would drop both.
func Close(nc *nats.Conn, timeout time.Duration) error {
	err := nc.Drain()
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		err = fmt.Errorf("bus: draining the connection: %w", err)
	} else {
		err = nil
		deadline := time.Now().Add(timeout)
		// The connection says it is closed only through its closed
		// handler (the caller's) or IsClosed.
		for !nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if !nc.IsClosed() {
			err = fmt.Errorf("bus: the connection did not drain within %v", timeout)
		}
	}
	nc.Close()
	return err
}

// refused tells an error the servers will repeat forever from one that
// retrying can cure, by nats.go's and crypto/tls's own errors.
func refused(err error) bool {
	for _, target := range []error{
		// The server's -ERR for credentials. nats.go returns its own type
		// for them, whose Is matches these sentinels.
		nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired,
		// The TLS handshake failed (either side refused the other's
		// certificate), or the server hung up right after it: how it
		// rejects a client certificate under TLS 1.3.
		nats.ErrTLS,
		// One side insists on TLS, the other will not speak it.
		nats.ErrSecureConnRequired, nats.ErrSecureConnWanted,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	// An alert the server sent after the handshake (TLS 1.3 judges the
	// client certificate then) reaches the first read, which nats.go does
	// not wrap in ErrTLS. crypto/tls returns it as a *net.OpError with Op
	// "remote error" around its unexported alert type: Op is all there is
	// to tell it by.
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "remote error" {
		return true
	}
	_, ok := errors.AsType[*tls.CertificateVerificationError](err)
	return ok
}

// connHandlers are the connection's callbacks: logging, and the caller's
// OnReconnect and OnConnected.
func connHandlers(o ConnOptions) []nats.Option {
	log := o.Log
	connected := func(up bool) {
		if o.OnConnected != nil {
			o.OnConnected(up)
		}
	}
	return []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			connected(false)
			// A nil error is a disconnection asked for: Close.
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			connected(true)
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
			if o.OnReconnect != nil {
				o.OnReconnect()
			}
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			connected(true)
			log.Info("NATS connected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			connected(false)
			log.Info("NATS connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("NATS error", "err", err)
		}),
	}
}

// natsOptions are the connection's settings and credentials.
func natsOptions(o ConnOptions) ([]nats.Option, error) {
	n := o.NATS
	opts := []nats.Option{
		nats.Name("ward-" + o.HostID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// A dead server (not a closed socket) is noticed within ~6 s.
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(3),
	}
	for _, f := range []struct{ key, path string }{
		{"nats.nkey_seed_file", n.NkeySeedFile}, {"nats.creds_file", n.CredsFile},
		{"nats.tls.ca_file", n.TLS.CAFile}, {"nats.tls.cert_file", n.TLS.CertFile}, {"nats.tls.key_file", n.TLS.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCredentials, f.key, err)
		}
	}
	switch {
	case n.Token != "":
		opts = append(opts, nats.Token(n.Token))
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	case n.NkeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(n.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%w: nats.nkey_seed_file: %v", ErrCredentials, err)
		}
		opts = append(opts, opt)
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	}
	if n.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(n.TLS.CAFile))
	}
	if n.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(n.TLS.CertFile, n.TLS.KeyFile))
	}
	return opts, nil
}

package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestRefused classifies errors shaped as nats.go and crypto/tls return
// them; the real servers' refusals are in auth_test.go.
func TestRefused(t *testing.T) {
	remoteAlert := &net.OpError{Op: "remote error", Net: "tcp", Err: tls.AlertError(116)} // certificate_required
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"authorization", nats.ErrAuthorization, true},
		{"expired", fmt.Errorf("connect: %w", nats.ErrAuthExpired), true},
		{"revoked", nats.ErrAuthRevoked, true},
		{"account expired", nats.ErrAccountAuthExpired, true},
		{"tls handshake", fmt.Errorf("%w: %w", nats.ErrTLS, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true},
		{"hung up after handshake", fmt.Errorf("%w: connection closed by remote after TLS handshake: %w", nats.ErrTLS, io.EOF), true},
		{"tls required", nats.ErrSecureConnRequired, true},
		{"tls unavailable", nats.ErrSecureConnWanted, true},
		{"alert after handshake", remoteAlert, true},
		{"alert, wrapped", fmt.Errorf("read: %w", remoteAlert), true},
		{"verification, unwrapped", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, false},
		{"no servers", nats.ErrNoServers, false},
		{"timeout", nats.ErrTimeout, false},
		{"deadline", context.DeadlineExceeded, false},
		{"eof", io.EOF, false},
		{"reset while reading", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		// Text is not evidence: only the errors' types and identities are.
		{"words alone", errors.New("nats: authorization violation: tls: bad certificate"), false},
	} {
		if got := refused(tc.err); got != tc.want {
			t.Errorf("%s: refused(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

package bus

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/hostward/ward/config"
)

func connectWith(t *testing.T, n config.NATS) error {
	t.Helper()
	nc, err := Connect(ConnOptions{HostID: "auth", NATS: n, Log: quiet, FirstTimeout: 2 * time.Second})
	if err == nil {
		defer nc.Close()
		if !nc.IsConnected() {
			return errors.New("not connected")
		}
	}
	return err
}

func TestAuthUserPassword(t *testing.T) {
	ns := runServer(t, &server.Options{Username: "ward", Password: "pw"})
	url := []string{ns.ClientURL()}
	if err := connectWith(t, config.NATS{Servers: url, User: "ward", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if err := connectWith(t, config.NATS{Servers: url, User: "ward", Password: "bad"}); !errors.Is(err, ErrCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestAuthToken(t *testing.T) {
	ns := runServer(t, &server.Options{Authorization: "tok"})
	url := []string{ns.ClientURL()}
	if err := connectWith(t, config.NATS{Servers: url, Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	if err := connectWith(t, config.NATS{Servers: url, Token: "nope"}); !errors.Is(err, ErrCredentials) {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestAuthNkey(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.nk"), filepath.Join(dir, "bad.nk")
	os.WriteFile(good, seed, 0o600)
	os.WriteFile(bad, otherSeed, 0o600)
	ns := runServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	url := []string{ns.ClientURL()}
	if err := connectWith(t, config.NATS{Servers: url, NkeySeedFile: good}); err != nil {
		t.Fatal(err)
	}
	if err := connectWith(t, config.NATS{Servers: url, NkeySeedFile: bad}); !errors.Is(err, ErrCredentials) {
		t.Fatalf("unknown nkey: %v", err)
	}
	if err := connectWith(t, config.NATS{Servers: url, NkeySeedFile: filepath.Join(dir, "missing")}); !errors.Is(err, ErrCredentials) {
		t.Fatalf("missing seed file: %v", err)
	}
}

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all made here, and returns their paths.
type pki struct{ ca, srvCert, srvKey, cliCert, cliKey string }

func makePKI(t *testing.T, dir, prefix string) pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: prefix + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		c, k := filepath.Join(dir, prefix+name+".pem"), filepath.Join(dir, prefix+name+"-key.pem")
		os.WriteFile(c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		os.WriteFile(k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
		return c, k
	}
	p := pki{ca: filepath.Join(dir, prefix+"ca.pem")}
	os.WriteFile(p.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	p.srvCert, p.srvKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.cliCert, p.cliKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func TestAuthTLS(t *testing.T) {
	dir := t.TempDir()
	p := makePKI(t, dir, "")
	other := makePKI(t, dir, "other-")
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.srvCert, KeyFile: p.srvKey, CaFile: p.ca, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	ns := runServer(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 2})
	url := []string{"tls://" + ns.Addr().String()}
	good := config.NATS{Servers: url, TLS: config.TLS{CAFile: p.ca, CertFile: p.cliCert, KeyFile: p.cliKey}}
	if err := connectWith(t, good); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]config.NATS{
		"client cert from another CA": {Servers: url, TLS: config.TLS{CAFile: p.ca, CertFile: other.cliCert, KeyFile: other.cliKey}},
		"server not trusted":          {Servers: url, TLS: config.TLS{CAFile: other.ca, CertFile: p.cliCert, KeyFile: p.cliKey}},
		"no client cert":              {Servers: url, TLS: config.TLS{CAFile: p.ca}},
	} {
		if err := connectWith(t, n); !errors.Is(err, ErrCredentials) {
			t.Errorf("%s: %v, want ErrCredentials", name, err)
		}
	}
}

package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkProbe is the agent's side of one probe on loopback; a host with
// 1,000 instances at the default 2 s interval runs 500 of these a second.
func BenchmarkProbe(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	c := NewChecker(nil)
	defer c.Close()
	for _, tc := range []struct {
		name string
		chk  Check
	}{
		{"tcp", Check{Type: TypeTCP}},
		{"http", Check{Type: TypeHTTP, Path: "/"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			chk, err := normalize(tc.chk)
			if err != nil {
				b.Fatal(err)
			}
			p := &probe{id: "x", addr: addr, url: "http://" + addr + chk.Path, check: chk}
			for b.Loop() {
				if err := c.probeOnce(context.Background(), p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package agent

import (
	"errors"
	"testing"

	"github.com/hostward/ward/api"
)

// FuzzDecode: no input makes decoding panic, and every refusal is an
// invalid_argument; what decodes also survives normalize without panicking.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"id":"7f3c9a","name":"shop-web","index":0,"command":["/bin/sh","-c","true"],"env":{"FOO":"bar"},` +
			`"limits":{"memory_bytes":268435456,"swap_bytes":0,"cpu_shares":1024,"cpu_millicores":500,"pids":256,"disk_bytes":1073741824},` +
			`"port":0,"routes":["shop.example.com"],"health_check":{"type":"tcp","interval_ms":2000,"timeout_ms":1000}}`,
		`{"id":"x","timeout_ms":10000}`,
		`{"id":"x","limits":{"memory_bytes":1}}`,
		`{}`, `[]`, `null`, `{"name":"\u0000"}`, `{"index":1e400}`, `{"limits":{"pids":-1}}`,
	} {
		f.Add([]byte(s))
	}
	host := hostInfo{memTotal: 1 << 34, cpus: 2, portMin: 61000, portMax: 64999}
	defaults := api.Limits{MemoryBytes: i64(1 << 28), SwapBytes: i64(0), CPUShares: i64(1024), CPUMillicores: i64(0), Pids: i64(512), DiskBytes: i64(1 << 30)}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r api.Request
		if err := api.Decode(data, &r); err != nil {
			if !errors.Is(err, api.ErrInvalidArgument) {
				t.Fatalf("decode error is not invalid_argument: %v", err)
			}
		} else if _, _, err := normalize(r, defaults, host); err != nil && !errors.Is(err, api.ErrInvalidArgument) {
			t.Fatalf("normalize error is not invalid_argument: %v", err)
		}
		var s api.StopRequest
		if err := api.Decode(data, &s); err != nil && !errors.Is(err, api.ErrInvalidArgument) {
			t.Fatalf("stop: %v", err)
		}
		var l api.LimitRequest
		if err := api.Decode(data, &l); err != nil && !errors.Is(err, api.ErrInvalidArgument) {
			t.Fatalf("limit: %v", err)
		}
	})
}

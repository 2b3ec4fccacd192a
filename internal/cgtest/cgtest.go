// Package cgtest gives kernel-facing tests the host's real cgroup setup in
// whichever mode the host runs — v1 on a legacy or hybrid host, v2 on a
// unified one — so that one test body covers both versions: it reports the
// mode, hands out Manager configurations under throwaway parents (removed
// with everything in them when the test ends), and scales the tests' waits
// for slow kernels such as the emulated one of the cgroup v2 stage.
package cgtest

import (
	"os"
	"strconv"
	"time"
)

// Root is where the host's cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// ScaleEnv names the factor Timeout multiplies waits by. The cgroup v2
// stage sets it: under software emulation processes start about 15 times
// slower and compute 30–40 times slower than on the host.
const ScaleEnv = "WARD_TEST_TIMEOUT_SCALE"

// Timeout scales d, a test's bound on waiting for the system to reach a
// state, by $WARD_TEST_TIMEOUT_SCALE (default 1; values below 1 are
// ignored). It is for waits only: a test must never assert that something
// was fast.
func Timeout(d time.Duration) time.Duration {
	f, err := strconv.ParseFloat(os.Getenv(ScaleEnv), 64)
	if err != nil || f <= 1 {
		return d
	}
	return time.Duration(float64(d) * f)
}

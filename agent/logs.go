package agent

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/instdir"
)

// logCheckInterval is how often instance logs are checked against
// logs.max_bytes. A log can overshoot the cap by what the instance writes in
// one interval; the disk quota bounds it whatever happens.
const logCheckInterval = 2 * time.Second

// rotateLogs rotates the logs of every running instance that outgrew
// logs.max_bytes, in place (see instdir.Rotate for how, and why not by
// rename).
func (a *Agent) rotateLogs() {
	for _, in := range a.all() {
		in.mu.Lock()
		running := in.rec.State == api.StateRunning
		dir, uid := in.rec.Dir, in.rec.UID
		in.mu.Unlock()
		if !running {
			continue
		}
		for _, name := range instdir.Logs {
			if err := instdir.Rotate(dir, name, uid, a.cfg.Logs.MaxBytes, a.cfg.Logs.Keep); err != nil && !errors.Is(err, unix.ENOENT) {
				a.log.Warn("log rotation", "id", in.id, "file", name, "err", err)
			}
		}
	}
}

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/atomicfile"
)

// Record versions: this agent writes recordVersion and reads every
// version from minRecordVersion up (see upgrade). A record of a version
// outside that range, or in a state this agent does not know, was written
// by a newer agent: reconcile refuses to start rather than guess, because
// a guess could kill the instance or leak it.
const (
	minRecordVersion = 1
	// 2: Announced, the event that announced the record's latest change.
	recordVersion = 2
)

// record is the durable truth about one instance: what was asked, what the
// agent holds for it, and how far its life has got. The uid and port leases
// live here and nowhere else, so a lease cannot outlive its record.
type record struct {
	Version   int         `json:"version"`
	Spec      api.Request `json:"spec"`   // as requested (defaults filled): the idempotency key's spec
	Limits    api.Limits  `json:"limits"` // in force now: Spec.Limits changed by limit requests
	Exe       string      `json:"exe"`    // Spec.Command[0] resolved
	State     api.State   `json:"state"`
	Reason    string      `json:"reason,omitempty"`
	PID       int         `json:"pid,omitempty"`
	StartTime uint64      `json:"start_time,omitempty"` // of PID, guards against pid reuse
	UID       int         `json:"uid"`
	Port      int         `json:"port,omitempty"` // 0: none
	Cgroup    string      `json:"cgroup"`         // group name under the parent
	Dir       string      `json:"dir"`
	CreatedAt time.Time   `json:"created_at"`
	StartedAt *time.Time  `json:"started_at,omitempty"`
	ExitedAt  *time.Time  `json:"exited_at,omitempty"`
	ExitCode  *int        `json:"exit_code,omitempty"`
	Signal    string      `json:"exit_signal,omitempty"`
	// What the cgroup and the logs said as the instance ended, kept because
	// both are removed with it.
	MemoryPeak *uint64 `json:"memory_peak_bytes,omitempty"`
	OOMKills   uint64  `json:"oom_kills,omitempty"`
	StderrTail string  `json:"stderr_tail,omitempty"`
	// Released is set once everything the instance held is gone; a terminal
	// record without it is a release to finish.
	Released bool `json:"released,omitempty"`
	// Announced is the event, with its number, that announced the latest
	// change this record states (see Agent.commit). It is written in the
	// same step that stores the event, record first: a restarted agent
	// that finds its number above the outbox's last one knows the event
	// was never stored, and announces it then. nil: nothing announced yet
	// (a start not yet running), or a version 1 record.
	Announced *api.Event `json:"announced,omitempty"`
}

// store keeps one file per instance record under dir.
type store struct {
	dir string
}

func (s *store) path(id string) string { return filepath.Join(s.dir, id+".json") }

// save writes rec atomically and durably (temp file, fsync, rename).
//
// The directory is not synced: a power loss may bring back the previous
// version of a record or lose a new one, and both are states reconcile
// handles — after a power loss no instance process or cgroup is left for a
// stale record to mislead anyone about.
func (s *store) save(rec *record) error { return s.write(rec, true) }

// saveIntent records the intent to make a side effect (state starting or
// stopping) before making it. It is atomic but not synced: a restarted
// agent — the case intents exist for — reads it from the page cache, and
// the side effects it announces (processes, cgroups) do not survive the
// power loss that could lose it. What a power loss can leave is a torn new
// record; load recognises those by their age (see load).
func (s *store) saveIntent(rec *record) error { return s.write(rec, false) }

func (s *store) write(rec *record, sync bool) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record %s: %w", rec.Spec.ID, err)
	}
	write := atomicfile.WriteFileNoSync
	if sync {
		write = atomicfile.WriteFile
	}
	if err := write(s.path(rec.Spec.ID), b, 0o600); err != nil {
		return fmt.Errorf("record %s: %w", rec.Spec.ID, err)
	}
	return nil
}

// sync makes the record of id, written by saveIntent, durable.
func (s *store) sync(id string) error {
	f, err := os.Open(s.path(id))
	if err != nil {
		return fmt.Errorf("record %s: %w", id, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("record %s: sync: %w", id, err)
	}
	return nil
}

func (s *store) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record %s: %w", id, err)
	}
	return nil
}

// load reads every record. An unreadable record written before this boot
// is the torn remains of an unsynced write cut by a power loss: nothing it
// could describe survived the reboot, so it is set aside (renamed *.torn)
// and reported. Any other unreadable record is an error: guessing could
// kill a live instance or leak one.
func (s *store) load(bootTime time.Time) (recs []*record, torn []string, err error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("records: %w", err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(s.dir, name)
		if strings.HasPrefix(name, ".") {
			// an interrupted atomic write; the real file is intact
			os.Remove(p)
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		rec, err := readRecord(p, name)
		if err == nil {
			recs = append(recs, rec)
			continue
		}
		if st, serr := os.Stat(p); serr == nil && st.ModTime().Before(bootTime) {
			if rerr := os.Rename(p, p+".torn"); rerr == nil {
				torn = append(torn, fmt.Sprintf("%s: %v", name, err))
				continue
			}
		}
		errs = append(errs, err)
	}
	return recs, torn, errors.Join(errs...)
}

func readRecord(p, name string) (*record, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	rec := new(record)
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("record %s: %w", name, err)
	}
	if rec.Version < minRecordVersion || rec.Version > recordVersion {
		return nil, fmt.Errorf("record %s: version %d, this agent reads %d to %d: %w", name, rec.Version, minRecordVersion, recordVersion, ErrRecordVersion)
	}
	if rec.Spec.ID+".json" != name {
		return nil, fmt.Errorf("record %s: holds id %q: not a record this agent wrote", name, rec.Spec.ID)
	}
	if !knownState(rec.State) {
		return nil, fmt.Errorf("record %s: %w %q", name, ErrUnknownState, rec.State)
	}
	return rec, nil
}

// ErrRecordVersion is a record of a version this agent cannot read.
var ErrRecordVersion = errors.New("record version not understood")

// bootTime is when this kernel booted (/proc/stat btime).
func bootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("/proc/stat btime: %w", err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("/proc/stat: no btime")
}

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hostward/ward/atomicfile"
)

// recordVersion is bumped when record's meaning changes incompatibly.
const recordVersion = 1

// record is the durable truth about one instance: what was asked, what the
// agent holds for it, and how far its life has got. The uid and port leases
// live here and nowhere else, so a lease cannot outlive its record.
type record struct {
	Version   int        `json:"version"`
	Spec      Request    `json:"spec"`
	Exe       string     `json:"exe"` // Spec.Command[0] resolved
	State     State      `json:"state"`
	Reason    string     `json:"reason,omitempty"`
	PID       int        `json:"pid,omitempty"`
	StartTime uint64     `json:"start_time,omitempty"` // of PID, guards against pid reuse
	UID       int        `json:"uid"`
	Port      int        `json:"port,omitempty"` // 0: none
	Cgroup    string     `json:"cgroup"`         // group name under the parent
	Dir       string     `json:"dir"`
	CreatedAt time.Time  `json:"created_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	ExitedAt  *time.Time `json:"exited_at,omitempty"`
	ExitCode  *int       `json:"exit_code,omitempty"`
	Signal    string     `json:"exit_signal,omitempty"`
	// Released is set once everything the instance held is gone; a terminal
	// record without it is a release to finish.
	Released bool `json:"released,omitempty"`
}

// store keeps one file per instance record under dir.
type store struct {
	dir string
}

func (s *store) path(id string) string { return filepath.Join(s.dir, id+".json") }

// save writes rec atomically and durably: the agent only acts on what a
// restarted agent would also find.
func (s *store) save(rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record %s: %w", rec.Spec.ID, err)
	}
	if err := atomicfile.WriteFile(s.path(rec.Spec.ID), b, 0o600, true); err != nil {
		return fmt.Errorf("record %s: %w", rec.Spec.ID, err)
	}
	return nil
}

func (s *store) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record %s: %w", id, err)
	}
	return atomicfile.SyncDir(s.dir)
}

// load reads every record. A record that cannot be parsed is reported, not
// dropped: guessing could kill a live instance or leak one.
func (s *store) load() ([]*record, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	var recs []*record
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// an interrupted atomic write; the real file is intact
			os.Remove(filepath.Join(s.dir, name))
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rec := new(record)
		if err := json.Unmarshal(b, rec); err != nil {
			errs = append(errs, fmt.Errorf("record %s: %w", name, err))
			continue
		}
		if rec.Version != recordVersion || rec.Spec.ID+".json" != name {
			errs = append(errs, fmt.Errorf("record %s: version %d, id %q: not a record this agent understands", name, rec.Version, rec.Spec.ID))
			continue
		}
		recs = append(recs, rec)
	}
	return recs, errors.Join(errs...)
}

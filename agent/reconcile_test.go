package agent

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/outbox"
)

// TestAnnouncedStarts: a stored started event answers an unfinished start
// of its id unless an end of that id follows it (an earlier instance under
// the same id), whatever the events' clock says.
func TestAnnouncedStarts(t *testing.T) {
	ob, err := outbox.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{outbox: ob}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	store := func(id, kind string, state api.State, at time.Time) {
		t.Helper()
		if _, err := ob.Append(func(seq uint64) (string, []byte, error) {
			b, err := json.Marshal(api.Event{Seq: seq, Time: at, ID: id, Kind: kind, State: state})
			return api.EventSubject("h", kind), b, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// "again": an earlier instance started and ended, then the new one
	// started — its event stamped before the record by a clock step back.
	store("again", api.EventStarted, api.StateRunning, t0)
	store("again", api.EventStopped, api.StateStopped, t0.Add(time.Second))
	store("again", api.EventStarted, api.StateRunning, t0.Add(-time.Hour))
	// "old": only an earlier instance's start and end are stored.
	store("old", api.EventStarted, api.StateRunning, t0)
	store("old", api.EventExited, api.StateExited, t0.Add(time.Second))
	// "notified": an OOM notice is not an end.
	store("notified", api.EventStarted, api.StateRunning, t0)
	store("notified", api.EventOOMKilled, api.StateRunning, t0.Add(time.Second))
	// "killed": an OOM kill is.
	store("killed", api.EventStarted, api.StateRunning, t0)
	store("killed", api.EventOOMKilled, api.StateOOMKilled, t0.Add(time.Second))
	// "running": recorded running, not starting: not asked about.
	store("running", api.EventStarted, api.StateRunning, t0)

	var recs []*record
	for _, id := range []string{"again", "old", "notified", "killed", "none"} {
		r := &record{State: api.StateStarting, CreatedAt: t0}
		r.Spec.ID = id
		recs = append(recs, r)
	}
	r := &record{State: api.StateRunning, CreatedAt: t0}
	r.Spec.ID = "running"
	recs = append(recs, r)

	got := a.announcedStarts(recs)
	want := map[string]bool{"again": true, "notified": true}
	for id := range map[string]bool{"again": true, "old": true, "notified": true, "killed": true, "none": true, "running": true} {
		if got[id] != want[id] {
			t.Errorf("%s: announced %v, want %v", id, got[id], want[id])
		}
	}
}

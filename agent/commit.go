package agent

import (
	"encoding/json"
	"errors"

	"github.com/hostward/ward/api"
)

// commit makes next in's record and, when e is given, announces it with e
// — as one step that no crash can split into a change nobody hears of or
// an announcement of a change that never happened.
//
// The record is written first, naming the event's number, and the event
// is stored right behind it, both under the outbox's lock, so that no
// other event can take that number in between. An agent that dies after
// the record and before the event leaves a record naming a number above
// the outbox's last one: the next agent's reconcile announces it then (see
// announceUnstored). The event is held back from the bus until the record
// is synced to disk: no consumer hears of a change a power loss could
// still take back.
//
// On failure nothing has changed: not the record (on disk or in memory),
// not the outbox. Caller holds in.opMu.
func (a *Agent) commit(in *instance, next record, e *api.Event, crashAt string) error {
	next.Version = recordVersion
	if e == nil {
		if err := a.store.save(&next); err != nil {
			return err
		}
		in.setRecord(next)
		return nil
	}
	ev := *e
	ev.Host = a.cfg.HostID
	in.mu.Lock()
	prev := in.rec
	in.mu.Unlock()
	written := false
	it, err := a.outbox.AppendHeld(func(seq uint64) (string, []byte, error) {
		ev.Seq = seq
		b, err := json.Marshal(ev)
		if err != nil {
			return "", nil, err
		}
		announced := ev
		next.Announced = &announced
		if err := a.store.saveIntent(&next); err != nil {
			return "", nil, err
		}
		written = true
		crashpoint(crashAt)
		return api.EventSubject(ev.Host, ev.Kind), b, nil
	})
	if err != nil {
		if written {
			// The event was not stored, and its number goes to the next
			// event: the record must not name it.
			if rerr := a.store.saveIntent(&prev); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return err
	}
	if err := a.store.sync(next.Spec.ID); err != nil {
		// Renamed into place, the record is what every reader on this
		// boot sees; only a power loss could take it back, and with it
		// the instance's processes. Holding the event back for ever would
		// stop every later one.
		a.log.Error("record not synced to disk; its event goes out anyway", "id", in.id, "kind", ev.Kind, "err", err)
	}
	in.setRecord(next)
	a.outbox.Release(it.Seq)
	a.deliver(ev)
	return nil
}

// setRecord replaces in's record.
func (in *instance) setRecord(rec record) {
	in.mu.Lock()
	in.rec = rec
	in.mu.Unlock()
}

// record returns a copy of in's record.
func (in *instance) record() record {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.rec
}

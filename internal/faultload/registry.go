package faultload

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// Snapshot records every user's registry entry as it is before the fault,
// read through node via (GET /v1/sessions/{user}); it fails the test if
// some user has no owner and backup yet.
func (w *Workload) Snapshot(via string) {
	w.t.Helper()
	for _, u := range w.users {
		deadline := time.Now().Add(snapshotWait)
		for {
			s, st := w.session(via, u.name)
			if st == http.StatusOK && s.Owner != "" && s.Backup != "" {
				u.before = s
				break
			}
			if time.Now().After(deadline) {
				w.t.Fatalf("registry entry of %s before the fault: %d %+v", u.name, st, s)
			}
			time.Sleep(pollEvery)
		}
	}
}

// Owners counts the users each node owns, and backs up, in the Snapshot.
func (w *Workload) Owners() (owned, backed map[string]int) {
	owned, backed = map[string]int{}, map[string]int{}
	for _, u := range w.users {
		owned[u.before.Owner]++
		backed[u.before.Backup]++
	}
	return owned, backed
}

// MostOwned returns the node owning the most users in the Snapshot (the
// lowest id among equals) and how many it owns.
func (w *Workload) MostOwned() (string, int) {
	owned, _ := w.Owners()
	best, n := "", -1
	for id, k := range owned {
		if k > n || k == n && id < best {
			best, n = id, k
		}
	}
	return best, n
}

// entryViolation says how a user's registry entry s breaks G4 against
// its entry before the fault, or "" if it does not: the session must stay
// the same (continuity), and the epoch must never go back and must go up
// whenever the owner changed (every ownership change bumps it).
func entryViolation(before, s protocol.Session) string {
	switch {
	case s.Session != before.Session:
		return fmt.Sprintf("session changed from %s to %s: continuity was lost", before.Session, s.Session)
	case s.Epoch < before.Epoch:
		return fmt.Sprintf("epoch went back from %d to %d", before.Epoch, s.Epoch)
	case s.Owner != before.Owner && s.Epoch == before.Epoch:
		return fmt.Sprintf("owner changed from %s to %s under the same epoch %d", before.Owner, s.Owner, s.Epoch)
	}
	return ""
}

// unplaced says why entry s does not yet name a live owner and another
// live node as backup, or "" if it does.
func unplaced(s protocol.Session, live []string) string {
	switch {
	case !slices.Contains(live, s.Owner):
		return fmt.Sprintf("owner %q is not a live node", s.Owner)
	case !slices.Contains(live, s.Backup) || s.Backup == s.Owner:
		return fmt.Sprintf("backup %q is not another live node", s.Backup)
	}
	return ""
}

// checkRegistry waits until every user's entry, read through the first
// live node, names a live owner and another live backup, and asserts that
// no entry read on the way, nor the last, breaks entryViolation.
func (w *Workload) checkRegistry(live []string) {
	w.t.Helper()
	deadline := time.Now().Add(registryWait)
	moved := 0
	for _, u := range w.users {
		var s protocol.Session
		var why, broken string
		for {
			var st int
			if s, st = w.session(live[0], u.name); st != http.StatusOK {
				why = fmt.Sprintf("GET /v1/sessions/%s: %d", u.name, st)
			} else {
				why = unplaced(s, live)
				if v := entryViolation(u.before, s); broken == "" && v != "" {
					broken = fmt.Sprintf("%s (%+v)", v, s)
				}
			}
			if why == "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(pollEvery)
		}
		if s.Owner != u.before.Owner {
			moved++
		}
		if why != "" {
			w.t.Errorf("%s: registry after the fault: %s (%+v)", u.name, why, s)
		}
		if broken != "" {
			w.t.Errorf("%s: registry after the fault: %s; before the fault %+v", u.name, broken, u.before)
		}
	}
	w.t.Logf("registry: %d of %d users changed owner", moved, len(w.users))
}

// Users returns the workload's user ids.
func (w *Workload) Users() []string {
	out := make([]string, len(w.users))
	for i, u := range w.users {
		out[i] = u.name
	}
	return out
}

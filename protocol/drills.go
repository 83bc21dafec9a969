package protocol

import (
	"encoding/json"
	"time"
)

// Drill faults a node's drill runner takes (POST /v1/drills): the
// contract's sbctl drill --fault values.
const (
	DrillCrash   = FaultCrash
	DrillIsolate = FaultIsolate
	DrillDrain   = "drain"
)

// Drill states.
const (
	DrillRunning = "running"
	DrillDone    = "done"
	DrillFailed  = "failed"
)

// Bounds of a drill a node runs itself.
const (
	MaxDrillUsers      = 2000
	MaxDrillRate       = 10000
	MinDrillDurationMS = 1000
	MaxDrillDurationMS = 10 * 60 * 1000
)

// DrillRequest is the body of POST /v1/drills: the drill of `sbctl drill`,
// run by the node that receives it.
type DrillRequest struct {
	Target     string  `json:"target"`
	Fault      string  `json:"fault"`
	Users      int     `json:"users"`
	Rate       float64 `json:"rate"`
	DurationMS int64   `json:"duration_ms"`
}

// Drill is one drill a node runs or ran: the 202 answer of POST /v1/drills
// and GET /v1/drills/{id}. Report, once State is done, is the object
// `sbctl drill --json` prints (users, acked, lost, duplicated, gaps,
// out_of_order, resumed, continuity_lost, rto_p50_ms, rto_p99_ms,
// rto_max_ms, new_owner_ms and the engine's details); Error says why a
// failed drill failed.
type Drill struct {
	ID         string          `json:"id"`
	Target     string          `json:"target"`
	Fault      string          `json:"fault"`
	Users      int             `json:"users"`
	Rate       float64         `json:"rate"`
	DurationMS int64           `json:"duration_ms"`
	State      string          `json:"state"`
	StartedAt  time.Time       `json:"started_at"`
	Progress   DrillProgress   `json:"progress"`
	Report     json.RawMessage `json:"report,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// DrillProgress is a running drill's live figures.
type DrillProgress struct {
	Phase     string `json:"phase"`
	ElapsedMS int64  `json:"elapsed_ms"`
	Connected int64  `json:"connected"`
	Sent      int64  `json:"sent"`
	Acked     int64  `json:"acked"`
	Delivered int64  `json:"delivered"`
	Errors    int64  `json:"errors"`
}

// Drills answers GET /v1/drills: the node's drills, newest first, at most
// ten.
type Drills struct {
	Drills []Drill `json:"drills"`
}

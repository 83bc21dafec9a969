package session

import (
	"io"
)

// Machine adapts the Registry to the byte-level replicated state machine
// the consensus layer drives: encoded command in, encoded result out.
type Machine struct {
	Registry *Registry
	// OnApply, when set, sees every applied command and its result, in log
	// order, on the apply goroutine. The node uses it to react to ownership
	// changes (fencing local streams) without polling. It must not block.
	OnApply func(Command, Result)
}

// NewMachine returns a Machine over an empty registry.
func NewMachine() *Machine { return &Machine{Registry: NewRegistry()} }

// Apply decodes and applies one command. A command that does not decode is
// answered with ErrBadCommand and changes nothing: a bad entry in the log
// must never stop a replica.
func (m *Machine) Apply(_ uint64, cmd []byte) []byte {
	c, err := DecodeCommand(cmd)
	if err != nil {
		return Result{Err: ErrBadCommand}.Encode(nil)
	}
	res := m.Registry.Apply(c)
	if m.OnApply != nil {
		m.OnApply(c, res)
	}
	return res.Encode(nil)
}

// Snapshot takes a point-in-time copy and returns the function that persists it.
func (m *Machine) Snapshot() (func(io.Writer) error, error) {
	im := m.Registry.Snapshot()
	return func(w io.Writer) error { return WriteSnapshot(w, im) }, nil
}

// Restore replaces the registry with the snapshot read from r.
func (m *Machine) Restore(r io.Reader) error { return m.Registry.Restore(r) }

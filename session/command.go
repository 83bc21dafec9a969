package session

import (
	"encoding/binary"
	"fmt"

	"github.com/switchboard/switchboard/internal/wire"
)

// Kind names a registry command.
type Kind uint8

// Registry commands. Values are part of the Raft log format: never reuse one.
const (
	KindClaim      Kind = 1 // take ownership (CAS on Epoch), bumps the epoch
	KindAttach     Kind = 2 // owner marks the user connected
	KindDetach     Kind = 3 // owner marks the user disconnected; resume window starts
	KindSetBackup  Kind = 4 // owner records the replica node
	KindNodeFailed Kind = 5 // a node died: detach its users, drop it as backup
	KindExpire     Kind = 6 // retire users past the resume window
)

func (k Kind) String() string {
	switch k {
	case KindClaim:
		return "claim"
	case KindAttach:
		return "attach"
	case KindDetach:
		return "detach"
	case KindSetBackup:
		return "set-backup"
	case KindNodeFailed:
		return "node-failed"
	case KindExpire:
		return "expire"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Command is one registry command. Which fields matter depends on Kind;
// the proposer fills in Now (unix ms) so that apply reads no clock.
type Command struct {
	Kind    Kind
	User    string
	Node    string   // acting node: claimant or owner; the failed node for NodeFailed
	Session string   // claim: the session id the entry gets
	Backup  string   // claim, set-backup: the replica node
	Epoch   uint64   // the epoch the command expects (CAS)
	Attach  bool     // claim: the claimant has a live connection
	Now     int64    // unix ms, set by the proposer
	Window  int64    // expire: resume window in ms
	Nodes   []string // expire sweep: dead nodes whose users may be retired
}

// Result is the outcome of applying one command.
type Result struct {
	Entry Entry // the user's entry after the command (or the current one on a CAS failure)
	Count int   // NodeFailed, Expire: entries changed
	Err   error // nil or one of the contract errors
}

// codecVersion leads every encoded command, result and snapshot so the
// format can evolve while old logs still replay.
const codecVersion = 1

// Command field flags: only fields that are set are encoded.
const (
	fUser = 1 << iota
	fNode
	fSession
	fBackup
	fEpoch
	fAttach
	fWindow
	fNodes
)

// Encode appends the binary encoding of c to dst.
func (c Command) Encode(dst []byte) []byte {
	var flags uint64
	if c.User != "" {
		flags |= fUser
	}
	if c.Node != "" {
		flags |= fNode
	}
	if c.Session != "" {
		flags |= fSession
	}
	if c.Backup != "" {
		flags |= fBackup
	}
	if c.Epoch != 0 {
		flags |= fEpoch
	}
	if c.Attach {
		flags |= fAttach
	}
	if c.Window != 0 {
		flags |= fWindow
	}
	if len(c.Nodes) > 0 {
		flags |= fNodes
	}
	dst = append(dst, codecVersion, byte(c.Kind))
	dst = binary.AppendUvarint(dst, flags)
	dst = binary.AppendVarint(dst, c.Now)
	if flags&fUser != 0 {
		dst = appendString(dst, c.User)
	}
	if flags&fNode != 0 {
		dst = appendString(dst, c.Node)
	}
	if flags&fSession != 0 {
		dst = appendString(dst, c.Session)
	}
	if flags&fBackup != 0 {
		dst = appendString(dst, c.Backup)
	}
	if flags&fEpoch != 0 {
		dst = binary.AppendUvarint(dst, c.Epoch)
	}
	if flags&fWindow != 0 {
		dst = binary.AppendVarint(dst, c.Window)
	}
	if flags&fNodes != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(c.Nodes)))
		for _, n := range c.Nodes {
			dst = appendString(dst, n)
		}
	}
	return dst
}

// DecodeCommand decodes a command produced by Encode. It never panics;
// malformed input yields an error wrapping ErrBadCommand.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	d := newDecoder(b)
	if v := d.Byte(); v != codecVersion {
		return c, fmt.Errorf("%w: version %d", ErrBadCommand, v)
	}
	c.Kind = Kind(d.Byte())
	if c.Kind < KindClaim || c.Kind > KindExpire {
		return c, fmt.Errorf("%w: unknown kind %d", ErrBadCommand, c.Kind)
	}
	flags := d.Uvarint()
	c.Now = d.Varint()
	if flags&fUser != 0 {
		c.User = d.String()
	}
	if flags&fNode != 0 {
		c.Node = d.String()
	}
	if flags&fSession != 0 {
		c.Session = d.String()
	}
	if flags&fBackup != 0 {
		c.Backup = d.String()
	}
	if flags&fEpoch != 0 {
		c.Epoch = d.Uvarint()
	}
	c.Attach = flags&fAttach != 0
	if flags&fWindow != 0 {
		c.Window = d.Varint()
	}
	if flags&fNodes != 0 {
		n := d.Count(1)
		c.Nodes = make([]string, 0, n)
		for i := 0; i < n && d.Err() == nil; i++ {
			c.Nodes = append(c.Nodes, d.String())
		}
	}
	if d.Err() != nil {
		return c, fmt.Errorf("%w: %v", ErrBadCommand, d.Err())
	}
	if d.Len() != 0 {
		return c, fmt.Errorf("%w: %d trailing bytes", ErrBadCommand, d.Len())
	}
	return c, nil
}

// Result error codes on the wire.
var resultErrors = []error{nil, ErrStaleEpoch, ErrNotOwner, ErrNotFound, ErrBadCommand}

// Encode appends the binary encoding of r to dst.
func (r Result) Encode(dst []byte) []byte {
	code := byte(len(resultErrors)) // unknown error
	for i, e := range resultErrors {
		if e == r.Err {
			code = byte(i)
			break
		}
	}
	dst = append(dst, codecVersion, code)
	dst = binary.AppendUvarint(dst, uint64(r.Count))
	return appendEntry(dst, r.Entry)
}

// DecodeResult decodes a result produced by Result.Encode.
func DecodeResult(b []byte) (Result, error) {
	var r Result
	d := newDecoder(b)
	if v := d.Byte(); v != codecVersion {
		return r, fmt.Errorf("%w: result version %d", ErrBadCommand, v)
	}
	code := int(d.Byte())
	if code < len(resultErrors) {
		r.Err = resultErrors[code]
	} else {
		r.Err = fmt.Errorf("%w: result error code %d", ErrBadCommand, code)
	}
	r.Count = int(d.Uvarint())
	r.Entry = d.entry()
	if d.Err() != nil {
		return r, fmt.Errorf("%w: result: %v", ErrBadCommand, d.Err())
	}
	if d.Len() != 0 {
		return r, fmt.Errorf("%w: result: %d trailing bytes", ErrBadCommand, d.Len())
	}
	return r, nil
}

func appendEntry(dst []byte, e Entry) []byte {
	dst = appendString(dst, e.User)
	dst = appendString(dst, e.Session)
	dst = appendString(dst, e.Owner)
	dst = appendString(dst, e.Backup)
	dst = binary.AppendUvarint(dst, e.Epoch)
	dst = append(dst, byte(e.State))
	return binary.AppendVarint(dst, e.Since)
}

func appendString(dst []byte, s string) []byte { return wire.AppendString(dst, s) }

// decoder reads the session formats on top of wire.Reader.
type decoder struct{ *wire.Reader }

func newDecoder(b []byte) decoder { return decoder{wire.NewReader(b)} }

func (d decoder) entry() Entry {
	var e Entry
	e.User = d.String()
	e.Session = d.String()
	e.Owner = d.String()
	e.Backup = d.String()
	e.Epoch = d.Uvarint()
	e.State = State(d.Byte())
	e.Since = d.Varint()
	if e.State > Attached {
		d.Fail("state")
	}
	return e
}

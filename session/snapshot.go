package session

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// snapshotMagic marks a registry snapshot; the version byte follows.
const snapshotMagic = "SBREG"

// Image is a point-in-time copy of the registry.
type Image struct {
	Floor   uint64 // highest epoch of any removed entry
	Entries []Entry
}

// Snapshot returns a point-in-time copy of the registry, cheap to take
// under the consensus lock; WriteSnapshot persists it later.
func (r *Registry) Snapshot() Image {
	out := make([]Entry, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, *e)
	}
	return Image{Floor: r.floor, Entries: out}
}

// WriteSnapshot writes an image in the snapshot format.
func WriteSnapshot(w io.Writer, im Image) error {
	bw := bufio.NewWriter(w)
	buf := append([]byte(snapshotMagic), codecVersion)
	buf = binary.AppendUvarint(buf, im.Floor)
	buf = binary.AppendUvarint(buf, uint64(len(im.Entries)))
	for _, e := range im.Entries {
		buf = appendEntry(buf, e)
		if len(buf) > 64<<10 {
			if _, err := bw.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	return bw.Flush()
}

// Restore replaces the registry's contents with a snapshot.
func (r *Registry) Restore(rd io.Reader) error {
	b, err := io.ReadAll(rd)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	if len(b) < len(snapshotMagic)+1 || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: not a registry snapshot", ErrBadCommand)
	}
	d := newDecoder(b[len(snapshotMagic):])
	if v := d.Byte(); v != codecVersion {
		return fmt.Errorf("%w: snapshot version %d", ErrBadCommand, v)
	}
	floor := d.Uvarint()
	n := d.Count(7) // an entry takes at least 7 bytes
	fresh := NewRegistry()
	fresh.floor = floor
	for i := 0; i < n && d.Err() == nil; i++ {
		e := d.entry()
		if d.Err() != nil {
			break
		}
		// A duplicate would count its owner twice in owned (and backed).
		if _, dup := fresh.entries[e.User]; dup {
			return fmt.Errorf("%w: snapshot: duplicate user %q", ErrBadCommand, e.User)
		}
		fresh.entries[e.User] = &e
		if e.Owner != "" {
			fresh.owned[e.Owner]++
		}
		if e.Backup != "" {
			fresh.backed[e.Backup]++
		}
	}
	if d.Err() != nil {
		return fmt.Errorf("%w: snapshot: %v", ErrBadCommand, d.Err())
	}
	if d.Len() != 0 {
		return fmt.Errorf("%w: snapshot: %d trailing bytes", ErrBadCommand, d.Len())
	}
	*r = *fresh
	return nil
}

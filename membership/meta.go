package membership

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Meta is what each node gossips about itself. Its encoded form must fit in
// memberlist.MetaMaxSize (512 bytes).
type Meta struct {
	ID          string
	Region      string
	Zone        string
	PublicURL   string // base URL of the public listener, e.g. "http://127.0.0.1:7700"
	ClusterAddr string // host:port of the raft + peer listener
	Draining    bool
	// Clustered: the node holds Raft state (it bootstrapped, or a leader
	// replicated to it), so a Raft cluster exists. A node waiting for
	// --bootstrap-expect never bootstraps beside such a member.
	Clustered bool
}

// Wire format, version 1:
//
//	byte 0     version (1)
//	byte 1     flags: bit 0 draining, bit 1 leaving, bit 2 clustered; other bits reserved
//	then ID, Region, Zone, PublicURL, ClusterAddr, each as uvarint length + UTF-8 bytes
//
// Decoders ignore reserved flag bits and trailing bytes, so a later release can
// append optional fields without a version bump; the version changes only when
// an old decoder would misread the data.
const (
	metaVersion      byte = 1
	metaFlagDraining byte = 1 << 0
	// metaFlagLeaving is set by Pool.Leave just before the memberlist leave.
	// memberlist v0.6.0 does not tell event delegates whether a node failed or
	// left (Node.State is shadowed by its internal nodeState, see
	// hashicorp/memberlist#293), so peers use this flag to tell the two apart.
	metaFlagLeaving byte = 1 << 1
	// metaFlagClustered is Meta.Clustered. Older decoders ignore it.
	metaFlagClustered byte = 1 << 2
)

// encodeMeta returns the wire form of m. It fails with ErrMetaTooLarge when
// the result would not fit in a memberlist alive message.
func encodeMeta(m Meta, leaving bool) ([]byte, error) {
	fields := metaFields(&m)
	size := 2
	for _, f := range fields {
		size += uvarintLen(uint64(len(*f))) + len(*f)
	}
	if size > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d (shorten ID, Region, Zone, PublicURL or ClusterAddr)",
			ErrMetaTooLarge, size, memberlist.MetaMaxSize)
	}
	buf := make([]byte, 0, size)
	var flags byte
	if m.Draining {
		flags |= metaFlagDraining
	}
	if leaving {
		flags |= metaFlagLeaving
	}
	if m.Clustered {
		flags |= metaFlagClustered
	}
	buf = append(buf, metaVersion, flags)
	for _, f := range fields {
		buf = binary.AppendUvarint(buf, uint64(len(*f)))
		buf = append(buf, *f...)
	}
	return buf, nil
}

// decodeMeta parses the wire form written by encodeMeta.
func decodeMeta(b []byte) (m Meta, leaving bool, err error) {
	if len(b) < 2 {
		return Meta{}, false, fmt.Errorf("%w: %d bytes, need at least 2", ErrMetaInvalid, len(b))
	}
	if b[0] != metaVersion {
		return Meta{}, false, fmt.Errorf("%w: got %d, support %d", ErrMetaVersion, b[0], metaVersion)
	}
	flags := b[1]
	rest := b[2:]
	names := [...]string{"ID", "Region", "Zone", "PublicURL", "ClusterAddr"}
	for i, f := range metaFields(&m) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return Meta{}, false, fmt.Errorf("%w: field %s truncated", ErrMetaInvalid, names[i])
		}
		s := rest[k : k+int(n)]
		if !utf8.Valid(s) {
			return Meta{}, false, fmt.Errorf("%w: field %s is not UTF-8", ErrMetaInvalid, names[i])
		}
		*f = string(s)
		rest = rest[k+int(n):]
	}
	m.Draining = flags&metaFlagDraining != 0
	m.Clustered = flags&metaFlagClustered != 0
	return m, flags&metaFlagLeaving != 0, nil
}

// metaFields lists the string fields in wire order.
func metaFields(m *Meta) [5]*string {
	return [5]*string{&m.ID, &m.Region, &m.Zone, &m.PublicURL, &m.ClusterAddr}
}

func uvarintLen(v uint64) int {
	var tmp [binary.MaxVarintLen64]byte
	return binary.PutUvarint(tmp[:], v)
}

package membership

import "errors"

// Sentinel errors. Functions wrap them with %w and context; test with errors.Is.
var (
	// ErrInvalidConfig reports a Config that failed Validate.
	ErrInvalidConfig = errors.New("membership: invalid config")
	// ErrClosed is returned by operations on a Pool after Close.
	ErrClosed = errors.New("membership: pool closed")
	// ErrLeft is returned by operations that need cluster membership after Leave.
	// memberlist cannot rejoin after a leave; create a new Pool instead.
	ErrLeft = errors.New("membership: pool has left the cluster")
	// ErrJoin reports that no seed address could be contacted before the context ended.
	ErrJoin = errors.New("membership: join failed")
	// ErrBroadcastTimeout reports that a metadata update or leave was applied
	// locally but not confirmed as broadcast in time; gossip keeps spreading it.
	ErrBroadcastTimeout = errors.New("membership: broadcast not confirmed in time")
	// ErrMetaTooLarge reports node metadata whose encoding exceeds memberlist.MetaMaxSize.
	ErrMetaTooLarge = errors.New("membership: node metadata too large")
	// ErrMetaInvalid reports node metadata that cannot be decoded.
	ErrMetaInvalid = errors.New("membership: invalid node metadata")
	// ErrMetaVersion reports node metadata written in an unsupported format version.
	ErrMetaVersion = errors.New("membership: unsupported node metadata version")
)

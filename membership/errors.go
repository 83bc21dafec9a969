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
	// ErrInvalidKey reports a gossip key that is not base64 or not 16, 24
	// or 32 bytes long, a key file line that repeats a key, or an unknown
	// keyring op.
	ErrInvalidKey = errors.New("invalid gossip key")
	// ErrEncryptionOff reports a keyring operation on a pool whose gossip is
	// not encrypted; encryption cannot be turned on while the pool runs.
	ErrEncryptionOff = errors.New("gossip encryption is off")
	// ErrKeyNotInstalled reports a key to use or remove that the keyring
	// does not hold.
	ErrKeyNotInstalled = errors.New("gossip key not installed")
	// ErrPrimaryKey reports an attempt to remove the primary gossip key.
	ErrPrimaryKey = errors.New("the primary gossip key cannot be removed")
)

// Package filewatch keeps the parsed contents of a file that operators
// replace while the process runs — public keys, API keys — and reads it
// again when it changes, without a goroutine: the readers of the contents
// look at the file, at most once per interval, and one of them reloads it.
// A version that does not parse (or cannot be read) leaves the previous
// contents in force, and is logged once.
package filewatch

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// File holds the parsed contents of one file.
type File[T any] struct {
	path     string
	what     string // for logs: "public key file", "API key file"
	every    time.Duration
	now      func() time.Time
	maxBytes int64
	parse    func([]byte) (T, error)
	log      *slog.Logger

	value atomic.Pointer[T]
	// next is when (unix ns by now) the file may be looked at again; the
	// reader that moves it forward does the look.
	next atomic.Int64

	mu     sync.Mutex  // serializes loads; guards what follows
	loaded os.FileInfo // the version whose contents are in force
	failed os.FileInfo // the last version that failed to load, if any
	// problem is the last failure logged: a version that fails is logged
	// once, and so is a file that cannot be opened, however long it stays so.
	problem string
}

// Config says how a File reads and watches its file.
type Config[T any] struct {
	Path string
	// What names the file in logs and errors ("API key file").
	What string
	// Every is the least time between two looks at the file (its
	// identity, size and modification time).
	Every time.Duration
	// MaxBytes bounds the file; a larger version is a failed load.
	MaxBytes int64
	// Parse turns the file's bytes into its contents; an error refuses
	// the version.
	Parse func([]byte) (T, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives reloads and refused versions; nil means
	// slog.Default(). The contents are never logged.
	Logger *slog.Logger
}

// Load reads the file, which must parse, and returns it watched.
func Load[T any](cfg Config[T]) (*File[T], error) {
	f := &File[T]{path: cfg.Path, what: cfg.What, every: cfg.Every, now: cfg.Now,
		maxBytes: cfg.MaxBytes, parse: cfg.Parse, log: cfg.Logger}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	f.next.Store(f.now().Add(f.every).UnixNano())
	return f, nil
}

// Current returns the contents in force, after a look at the file if the
// interval has passed since the last one and no other reader is looking.
func (f *File[T]) Current() T {
	f.maybeReload()
	return *f.value.Load()
}

func (f *File[T]) maybeReload() {
	now := f.now().UnixNano()
	next := f.next.Load()
	if now < next || !f.next.CompareAndSwap(next, now+int64(f.every)) {
		return
	}
	if !f.mu.TryLock() { // a Reload is at it
		return
	}
	defer f.mu.Unlock()
	if fi, err := os.Stat(f.path); err == nil && (sameVersion(fi, f.loaded) || sameVersion(fi, f.failed)) {
		return
	}
	_ = f.loadLocked()
}

// Reload reads the file now and puts its contents in force, or keeps
// those in force and returns why not.
func (f *File[T]) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *File[T]) loadLocked() error {
	v, fi, err := f.read()
	if err != nil {
		err = fmt.Errorf("%s: %w", f.path, err)
		if f.value.Load() != nil && (fi != nil || err.Error() != f.problem) {
			f.log.Warn(f.what+" not reloaded; the previous version stays in force", "err", err)
		}
		f.failed, f.problem = fi, err.Error()
		return err
	}
	first := f.value.Load() == nil
	f.value.Store(&v)
	f.loaded, f.failed, f.problem = fi, nil, ""
	if !first {
		f.log.Info(f.what+" reloaded", "path", f.path)
	}
	return nil
}

// read parses the file and returns its info as of before the read, so a
// write that lands during it is seen next time. The info comes back with
// a parse error too, so that version is not parsed again.
func (f *File[T]) read() (T, os.FileInfo, error) {
	var zero T
	fh, err := os.Open(f.path)
	if err != nil {
		return zero, nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return zero, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(fh, f.maxBytes+1))
	if err != nil {
		return zero, nil, err
	}
	if int64(len(data)) > f.maxBytes {
		return zero, fi, fmt.Errorf("larger than %d bytes", f.maxBytes)
	}
	v, err := f.parse(data)
	return v, fi, err
}

// sameVersion tells whether a and b are the same file with the same size
// and modification time: a replacement by rename, an edit in place and a
// truncation all differ.
func sameVersion(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

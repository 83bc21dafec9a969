//go:build !linux

package gateway

import (
	"errors"
	"syscall"
)

// poller is Linux-only (epoll); elsewhere every connection has a reader
// goroutine (reader.go).
type poller struct{}

func newPoller(*Gateway) (*poller, error) { return nil, nil }

func (*poller) watch(*conn) (bool, error) { return false, nil }
func (*poller) arm(*conn) error           { return nil }
func (*poller) remove(*conn)              {}
func (*poller) close()                    {}

// readRaw is never called without a poller.
func readRaw(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }

// writeRaw is never called without a poller.
func writeRaw(syscall.RawConn, []byte) (int, error) { return 0, errors.ErrUnsupported }

func (c *conn) readNow([]byte) (int, error) { return 0, errors.ErrUnsupported }

//go:build !linux

package transport

// poller is Linux-only (epoll); elsewhere every connection has a reader
// goroutine (reader.go).
type poller struct{}

func newPoller(*Gateway) (*poller, error) { return nil, nil }

func (*poller) watch(*gwConn) (bool, error) { return false, nil }
func (*poller) arm(*gwConn) error           { return nil }
func (*poller) remove(*gwConn)              {}
func (*poller) close()                      {}

//go:build !linux

package gateway

// poller is Linux-only (epoll); elsewhere every connection has a reader
// goroutine (reader.go).
type poller struct{}

func newPoller(*Gateway) (*poller, error) { return nil, nil }

func (*poller) watch(*conn) (bool, error) { return false, nil }
func (*poller) arm(*conn) error           { return nil }
func (*poller) remove(*conn)              {}
func (*poller) close()                    {}

package membership

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/switchboard/switchboard/transport/netfault"
)

// gatedTransport is memberlist's own network transport behind a
// netfault.Gate: while the node is isolated (fault injection), packets
// sent are dropped, packets received are discarded, dials fail and
// incoming streams are closed, so that to the other nodes it looks cut
// off, and it sees them so too.
type gatedTransport struct {
	*memberlist.NetTransport
	gate    *netfault.Gate
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// newGatedTransport binds memberlist's transport as memberlist.Create
// would (a free port for port 0, written back into mc), behind gate.
func newGatedTransport(mc *memberlist.Config, gate *netfault.Gate) (*gatedTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip transport: %w", err)
	}
	if mc.BindPort == 0 {
		mc.BindPort = nt.GetAutoBindPort()
		if mc.AdvertiseAddr == "" {
			mc.AdvertisePort = mc.BindPort
		}
	}
	t := &gatedTransport{
		NetTransport: nt, gate: gate,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
		done: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t, nil
}

func (t *gatedTransport) forwardPackets() {
	defer t.wg.Done()
	in := t.NetTransport.PacketCh()
	for {
		select {
		case <-t.done:
			return
		case p := <-in:
			if t.gate.Isolated() {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		}
	}
}

func (t *gatedTransport) forwardStreams() {
	defer t.wg.Done()
	in := t.NetTransport.StreamCh()
	for {
		select {
		case <-t.done:
			return
		case c := <-in:
			c, err := t.gate.Admit(c)
			if err != nil {
				continue // closed by the gate
			}
			select {
			case t.streams <- c:
			case <-t.done:
				_ = c.Close()
				return
			}
		}
	}
}

// PacketCh is the packets received while the node is not isolated.
func (t *gatedTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// StreamCh is the streams accepted while the node is not isolated.
func (t *gatedTransport) StreamCh() <-chan net.Conn { return t.streams }

// WriteTo drops the packet while the node is isolated, as a network
// would: UDP tells the sender nothing.
func (t *gatedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.gate.Isolated() {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

// WriteToAddress is WriteTo for memberlist's node-aware calls.
func (t *gatedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.gate.Isolated() {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

// DialTimeout fails while the node is isolated.
func (t *gatedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout fails while the node is isolated; the streams it
// opens are closed when the node is isolated.
func (t *gatedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.gate.Isolated() {
		return nil, fmt.Errorf("gossip dial %s: %w", a.Addr, netfault.ErrIsolated)
	}
	c, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return t.gate.Admit(c)
}

// Shutdown stops memberlist's transport and the forwarders.
func (t *gatedTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

package peer

import (
	"context"
	"fmt"
)

// Caller reaches other nodes by id; *Links is one.
type Caller interface {
	Call(ctx context.Context, node string, method uint8, payload []byte) ([]byte, error)
	Send(ctx context.Context, node string, method uint8, payload []byte) error
}

// Registry takes the handlers a node serves; *Links is one.
type Registry interface {
	Handle(method uint8, h Handler, inline bool)
}

// Codec encodes and decodes one payload type.
type Codec[T any] struct {
	Append func(dst []byte, v T) []byte
	Decode func(p []byte) (T, error)
}

// Method is one node-to-node call with a typed request and answer: the
// caller's side (Call) and the server's (Serve) share its id and codecs,
// so a method is declared once.
type Method[Req, Resp any] struct {
	ID   uint8
	Name string
	// Inline methods are served on the link's read loop in arrival order:
	// for work that is short and whose order matters.
	Inline bool
	Req    Codec[Req]
	Resp   Codec[Resp]
}

// Call sends req to node and decodes its answer.
func (m Method[Req, Resp]) Call(ctx context.Context, c Caller, node string, req Req) (Resp, error) {
	var zero Resp
	p, err := c.Call(ctx, node, m.ID, m.Req.Append(nil, req))
	if err != nil {
		return zero, fmt.Errorf("%s to %s: %w", m.Name, node, err)
	}
	resp, err := m.Resp.Decode(p)
	if err != nil {
		return zero, fmt.Errorf("%s answer from %s: %w", m.Name, node, err)
	}
	return resp, nil
}

// Serve registers fn as this node's handler of m.
func (m Method[Req, Resp]) Serve(r Registry, fn func(ctx context.Context, from string, req Req) (Resp, error)) {
	r.Handle(m.ID, func(ctx context.Context, from string, p []byte) ([]byte, error) {
		req, err := m.Req.Decode(p)
		if err != nil {
			return nil, fmt.Errorf("%s from %s: %w", m.Name, from, err)
		}
		resp, err := fn(ctx, from, req)
		if err != nil {
			return nil, err
		}
		return m.Resp.Append(nil, resp), nil
	}, m.Inline)
}

// OneWay is a node-to-node frame that has no answer. Frames of one method
// sent to one node arrive in order while the link stays up; a frame whose
// link dies is lost.
type OneWay[Msg any] struct {
	ID     uint8
	Name   string
	Inline bool
	Msg    Codec[Msg]
}

// Send queues msg for node.
func (m OneWay[Msg]) Send(ctx context.Context, c Caller, node string, msg Msg) error {
	if err := c.Send(ctx, node, m.ID, m.Msg.Append(nil, msg)); err != nil {
		return fmt.Errorf("%s to %s: %w", m.Name, node, err)
	}
	return nil
}

// Serve registers fn as this node's handler of m.
func (m OneWay[Msg]) Serve(r Registry, fn func(ctx context.Context, from string, msg Msg)) {
	r.Handle(m.ID, func(ctx context.Context, from string, p []byte) ([]byte, error) {
		msg, err := m.Msg.Decode(p)
		if err != nil {
			return nil, fmt.Errorf("%s from %s: %w", m.Name, from, err)
		}
		fn(ctx, from, msg)
		return nil, nil
	}, m.Inline)
}

// ByAddress is a Caller that takes the cluster address of a node where
// Call and Send take its id: for calls to a node known by its address
// alone (the Raft leader).
func (p *Links) ByAddress() Caller { return byAddress{p} }

type byAddress struct{ p *Links }

func (a byAddress) Call(ctx context.Context, addr string, method uint8, payload []byte) ([]byte, error) {
	return a.p.CallAddr(ctx, addr, method, payload)
}

func (a byAddress) Send(ctx context.Context, addr string, method uint8, payload []byte) error {
	return a.p.sendAddr(ctx, addr, method, payload)
}

package faultload

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/switchboard/switchboard/protocol"
)

// Node is one node of the cluster under test, as its clients and
// operators reach it.
type Node struct {
	ID      string
	BaseURL string // http(s)://host:port: the publish (§4) and admin (§5) APIs
	WSURL   string // ws(s)://host:port/v1/connect (§3)
}

// Cluster is all the workload knows of the cluster under test: where its
// nodes listen and the credentials of the contract.
type Cluster struct {
	Nodes    []Node
	APIKey   string
	AdminKey string
	// Token mints a client token for a user.
	Token func(user string) (string, error)
	// Live returns the ids of the nodes publishers may send through now;
	// nil means every node.
	Live func() []string
	// TLS is what subscribers and publishers use for https:// and wss://
	// (the cluster's CA in RootCAs); nil means the system's roots.
	TLS *tls.Config
}

// live returns the ids publishers may use now.
func (c Cluster) live() []string {
	if c.Live != nil {
		return c.Live()
	}
	ids := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		ids[i] = n.ID
	}
	return ids
}

// apiError is a non-200 answer of the publish or admin API.
type apiError struct {
	status int
	msg    string // the protocol.Error body's text, if any
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

// post sends body to path on node base with the API key and decodes a 200
// answer into out.
func (w *Workload) post(base, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.cluster.APIKey)
	req.Header.Set("Content-Type", "application/json")
	return w.do(w.publishHTTP, req, out)
}

// do performs req and decodes a 200 answer into out; any other status is
// an *apiError carrying the body's protocol.Error text.
func (w *Workload) do(hc *http.Client, req *http.Request, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e protocol.Error
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		return &apiError{status: resp.StatusCode, msg: e.Error}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// session reads GET /v1/sessions/{user} through node via; the status is 0
// when the node could not be reached.
func (w *Workload) session(via, user string) (protocol.Session, int) {
	var s protocol.Session
	req, err := http.NewRequest(http.MethodGet, w.node(via).BaseURL+"/v1/sessions/"+user, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+w.cluster.AdminKey)
	var ae *apiError
	switch err = w.do(w.adminHTTP, req, &s); {
	case errors.As(err, &ae):
		return s, ae.status
	case err != nil:
		return s, 0
	}
	return s, http.StatusOK
}

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard/switchboard/protocol"
)

// maxResponseBytes bounds what sbctl reads from a node: a cluster listing
// of thousands of nodes is far below it.
const maxResponseBytes = 8 << 20

// errHTTP marks a non-2xx answer from the admin API.
var errHTTP = errors.New("admin API error")

// httpError is a non-2xx answer, carrying the server's "error" text and
// the whole body (which may say more, per node for instance).
type httpError struct {
	method, path string
	status       int
	msg          string
	body         []byte
}

func (e *httpError) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.method, e.path, e.status, http.StatusText(e.status))
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s
}

func (e *httpError) Unwrap() error { return errHTTP }

// adminClient talks to one node's admin API.
type adminClient struct {
	base    string
	key     string
	timeout time.Duration
	http    *http.Client
}

func newAdminClient(base, key string, timeout time.Duration, tlsConfig *tls.Config) *adminClient {
	tr := &http.Transport{
		TLSClientConfig:       tlsConfig,
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
		IdleConnTimeout:       10 * time.Second,
		MaxIdleConnsPerHost:   1,
	}
	return &adminClient{base: base, key: key, timeout: timeout, http: &http.Client{Transport: tr, Timeout: timeout}}
}

// Close drops idle connections so a short-lived process (or a test) leaves
// no goroutines behind.
func (c *adminClient) Close() { c.http.CloseIdleConnections() }

// do sends one request without a body; see send.
func (c *adminClient) do(method, path string) ([]byte, error) { return c.send(method, path, nil) }

// send sends one request with an optional JSON body and returns the body
// of a 2xx answer, or an *httpError with the server's message.
func (c *adminClient) send(method, path string, in []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(in))
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats method and URL, which we add once below
		}
		return nil, fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading answer: %w", method, c.base+path, err)
	}
	if len(body) > maxResponseBytes {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, c.base+path, maxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &httpError{method: method, path: path, status: resp.StatusCode, msg: serverMessage(body), body: body}
	}
	return body, nil
}

// getJSON GETs path and decodes the answer into v, returning the raw body.
func (c *adminClient) getJSON(path string, v any) ([]byte, error) {
	return c.callJSON(http.MethodGet, path, v)
}

// callJSON sends a bodyless request and decodes the answer into v.
func (c *adminClient) callJSON(method, path string, v any) ([]byte, error) {
	body, err := c.do(method, path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, path, err)
	}
	return body, nil
}

// serverMessage extracts {"error": "..."} from an error answer, or a short
// excerpt of a body that is not JSON (a proxy's HTML page, say).
func serverMessage(body []byte) string {
	var e protocol.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…" // the cut may split a rune
	}
	return s
}

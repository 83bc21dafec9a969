package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/switchboard/switchboard/internal/secret"
	"github.com/switchboard/switchboard/protocol"
)

// sbctl keyring: the cluster's gossip keyring through GET and POST
// /v1/gossip/keys (DESIGN.md §5). A rotation is install NEW, use NEW,
// remove OLD (docs/operations.md).

func cmdKeyring(g *globals, args []string, stdout io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usagef("keyring: want list, install, use or remove")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "list":
		return keyringList(g, args, stdout)
	case "install", "use", "remove":
		return keyringOp(g, sub, args, stdout)
	}
	return usagef("keyring: unknown subcommand %q, want list, install, use or remove", sub)
}

func keyringList(g *globals, args []string, stdout io.Writer) error {
	var gk protocol.GossipKeys
	err := query(g, "keyring list", args, 0, "", func([]string) string { return "/v1/gossip/keys" }, &gk, stdout,
		func() error { return printKeyring(stdout, gk) })
	if err == nil && len(gk.Unreachable) > 0 {
		err = fmt.Errorf("%s could not be asked: the list is incomplete", strings.Join(gk.Unreachable, ", "))
	}
	return err
}

// printKeyring renders the keys, one row each, primary first.
func printKeyring(w io.Writer, gk protocol.GossipKeys) error {
	if !gk.Encrypted {
		_, err := fmt.Fprintln(w, "gossip encryption is off (start the nodes with --gossip-key-file)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tPRIMARY\tNODES")
	for _, k := range gk.Keys {
		primary := "-"
		switch {
		case k.Primary:
			primary = "yes"
		case k.PrimaryOn > 0:
			primary = fmt.Sprintf("on %d of %d", k.PrimaryOn, gk.Nodes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\n", k.Fingerprint, primary, k.Nodes, gk.Nodes)
	}
	return tw.Flush()
}

func keyringOp(g *globals, op string, args []string, stdout io.Writer) error {
	fs := commandFlags("keyring "+op, g)
	keyFile := fs.String("key-file", "", "read the key from this file (its first line) instead of the command line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	want, what := 1, "K (a base64 key) or --key-file"
	if *keyFile != "" {
		want, what = 0, ""
	}
	pos, err := positional(fs, want, what)
	if err != nil {
		return err
	}
	var key string
	if *keyFile != "" {
		if key, err = secret.ReadFile(*keyFile); err != nil {
			return fmt.Errorf("key file: %w", err)
		}
		key, _, _ = strings.Cut(key, "\n")
		key = strings.TrimSpace(key)
	} else {
		key = pos[0]
	}
	if err := checkKey(key); err != nil {
		return usagef("keyring %s: %v", op, err)
	}
	c, err := g.adminClient()
	if err != nil {
		return err
	}
	defer c.Close()
	in, _ := json.Marshal(protocol.GossipKeyOp{Op: op, Key: key})
	var res protocol.GossipKeyOpResult
	body, err := c.send(http.MethodPost, "/v1/gossip/keys", in)
	var he *httpError
	switch {
	case errors.As(err, &he):
		body = he.body // per-node detail, when the node gave any
	case err != nil:
		return err
	}
	if jerr := json.Unmarshal(body, &res); jerr != nil {
		if err != nil {
			return err
		}
		return fmt.Errorf("POST /v1/gossip/keys: answer is not the expected JSON: %w", jerr)
	}
	if perr := printKeyOp(stdout, res); err == nil {
		err = perr
	}
	return err
}

// printKeyOp renders what each node did.
func printKeyOp(w io.Writer, res protocol.GossipKeyOpResult) error {
	if res.Op == "" {
		return nil // an error answer without detail: the error says it all
	}
	changed := 0
	for _, n := range res.Nodes {
		if n.Changed {
			changed++
		}
	}
	if res.Error == "" {
		fmt.Fprintf(w, "%s %s: done on %d nodes (%d changed)\n", res.Op, res.Fingerprint, len(res.Nodes), changed)
	} else {
		fmt.Fprintf(w, "%s %s: not done everywhere\n", res.Op, res.Fingerprint)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, n := range res.Nodes {
		state := "unchanged"
		switch {
		case !n.OK:
			state = "failed: " + n.Error
		case n.Changed:
			state = "changed"
		}
		fmt.Fprintf(tw, "%s\t%s\n", n.Node, state)
	}
	return tw.Flush()
}

// checkKey catches a malformed key before anything is sent: base64 of 16,
// 24 or 32 bytes, as the nodes want it.
func checkKey(key string) error {
	b, err := base64.StdEncoding.DecodeString(key)
	switch {
	case err != nil:
		return errors.New("the key is not base64")
	case len(b) != 16 && len(b) != 24 && len(b) != 32:
		return fmt.Errorf("the key is %d bytes, want 16, 24 or 32 (AES-128, -192 or -256)", len(b))
	}
	return nil
}

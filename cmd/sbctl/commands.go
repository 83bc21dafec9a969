package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchboard/switchboard/internal/secret"
	"github.com/switchboard/switchboard/internal/token"
	"github.com/switchboard/switchboard/protocol"
)

// commandFlags returns a flag set for a command with the global flags on it.
func commandFlags(name string, g *globals) *flag.FlagSet {
	fs := newFlagSet(name)
	g.register(fs)
	return fs
}

// positional checks the number of arguments left after a command's flags.
func positional(fs *flag.FlagSet, want int, what string) ([]string, error) {
	if fs.NArg() < want {
		return nil, usagef("%s: missing %s", fs.Name(), what)
	}
	if fs.NArg() > want {
		return nil, usagef("%s: unexpected arguments %q", fs.Name(), fs.Args()[want:])
	}
	return fs.Args(), nil
}

// query runs a read-only command: it parses the command's flags (with
// --json) and want positional arguments, GETs path(those arguments),
// decodes the answer into v, and prints it: as it came with --json, else
// with show.
func query(g *globals, name string, args []string, want int, what string, path func(pos []string) string, v any, stdout io.Writer, show func() error) error {
	fs := commandFlags(name, g)
	raw := fs.Bool("json", false, "print the raw JSON answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	pos, err := positional(fs, want, what)
	if err != nil {
		return err
	}
	c, err := g.adminClient()
	if err != nil {
		return err
	}
	defer c.Close()
	body, err := c.getJSON(path(pos), v)
	switch {
	case err != nil:
		return err
	case *raw:
		_, err = stdout.Write(body)
		return err
	}
	return show()
}

func cmdStatus(g *globals, args []string, stdout io.Writer) error {
	var ci protocol.Cluster
	return query(g, "status", args, 0, "", func([]string) string { return "/v1/cluster" }, &ci, stdout,
		func() error { return printStatus(stdout, ci) })
}

// printStatus renders the cluster as a header and one row per node.
func printStatus(w io.Writer, ci protocol.Cluster) error {
	leader := ci.Leader
	if leader == "" {
		leader = "(none: election in progress or no quorum)"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	fmt.Fprintf(tw, "term\t%d\n", ci.Term)
	fmt.Fprintf(tw, "commit index\t%d\n", ci.CommitIndex)
	if ci.Durability != "" {
		fmt.Fprintf(tw, "durability\t%s\n", ci.Durability)
	}
	clusterTLS := "off (cluster ports must be on a private network)"
	if ci.ClusterTLS {
		clusterTLS = "on"
	}
	fmt.Fprintf(tw, "cluster tls\t%s\n", clusterTLS)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	nodes := append([]protocol.ClusterNode(nil), ci.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREGION\tZONE\tSTATE\tRAFT\tCONNECTIONS\tSESSIONS\tPUBLIC URL")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n",
			n.ID, dash(n.Region), dash(n.Zone), dash(n.State), dash(n.Raft), n.Connections, n.SessionsOwned, dash(n.PublicURL))
	}
	return tw.Flush()
}

func cmdSessions(g *globals, args []string, stdout io.Writer) error {
	var si protocol.Session
	// PathEscape: user ids may hold '/', '?' or spaces.
	path := func(pos []string) string { return "/v1/sessions/" + url.PathEscape(pos[0]) }
	return query(g, "sessions", args, 1, "USER", path, &si, stdout, func() error {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, kv := range [][2]string{
			{"user", si.User}, {"session", si.Session}, {"owner", si.Owner}, {"backup", dash(si.Backup)},
			{"epoch", strconv.FormatUint(si.Epoch, 10)}, {"state", si.State}, {"seq", strconv.FormatUint(si.Seq, 10)},
		} {
			fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
		}
		return tw.Flush()
	})
}

func cmdRaft(g *globals, args []string, stdout io.Writer) error {
	var rs protocol.Raft
	return query(g, "raft", args, 0, "", func([]string) string { return "/v1/raft" }, &rs, stdout, func() error {
		fmt.Fprintf(stdout, "leader %s  term %d  commit %d  applied %d\n\n", dash(rs.Leader), rs.Term, rs.CommitIndex, rs.AppliedIndex)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tADDRESS\tSUFFRAGE\tREGION\tZONE\t")
		for _, s := range rs.Servers {
			id := s.ID
			if id == rs.Leader {
				id += " *"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", id, s.Address, s.Suffrage, dash(s.Region), dash(s.Zone))
		}
		return tw.Flush()
	})
}

func cmdChannels(g *globals, args []string, stdout io.Writer) error {
	var ci protocol.ChannelInfo
	path := func(pos []string) string { return "/v1/channels/" + url.PathEscape(pos[0]) }
	return query(g, "channels", args, 1, "NAME", path, &ci, stdout, func() error {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		nodes := strings.Join(ci.Nodes, ",")
		for _, kv := range [][2]string{
			{"channel", ci.Channel}, {"owner", dash(ci.Owner)}, {"backup", dash(ci.Backup)},
			{"epoch", strconv.FormatUint(ci.Epoch, 10)}, {"seq", strconv.FormatUint(ci.Seq, 10)},
			{"subscribers", strconv.Itoa(ci.Subscribers)}, {"nodes", dash(nodes)},
		} {
			fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
		}
		return tw.Flush()
	})
}

// devTokenSecret is where `switchboard --dev` keeps its token secret,
// relative to the directory it runs in.
const devTokenSecret = "switchboard-data/token-secret"

func cmdToken(g *globals, args []string, stdout io.Writer) error {
	fs := commandFlags("token", g)
	user := fs.String("user", "", "user id (the token's sub claim)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	secretFile := fs.String("token-secret-file", "", "file holding the token secret (env SWITCHBOARD_TOKEN_SECRET_FILE)")
	channels := fs.String("channels", "", "comma-separated channel patterns the token allows (exact names, or prefixes ending in *)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := positional(fs, 0, ""); err != nil {
		return err
	}
	if *user == "" {
		return usagef("token: --user is required")
	}
	if *ttl <= 0 {
		return usagef("token: --ttl must be positive, got %v", *ttl)
	}
	if *secretFile == "" {
		*secretFile = os.Getenv("SWITCHBOARD_TOKEN_SECRET_FILE")
	}
	if *secretFile == "" {
		// Beside a `switchboard --dev` node (DESIGN.md §6: the embedded
		// default), its own secret: `sbctl token --user U` just works.
		if _, err := os.Stat(devTokenSecret); err == nil {
			*secretFile = devTokenSecret
		}
	}
	if *secretFile == "" {
		return usagef("token: --token-secret-file (or SWITCHBOARD_TOKEN_SECRET_FILE) is required, short of a %s of switchboard --dev here", devTokenSecret)
	}
	tokenSecret, err := secret.ReadFile(*secretFile)
	if err != nil {
		return fmt.Errorf("token secret file: %w", err)
	}
	var patterns []string
	if *channels != "" {
		patterns = strings.Split(*channels, ",")
	}
	tok, err := token.MintChannels([]byte(tokenSecret), *user, *ttl, patterns)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

func cmdDrain(g *globals, args []string, stdout io.Writer) error {
	fs := commandFlags("drain", g)
	self := fs.Bool("self", false, "drain the node --addr points at, named by its /healthz (a Kubernetes preStop hook cannot pass the pod's name)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	want := 1
	if *self {
		want = 0
	}
	pos, err := positional(fs, want, "NODE (or --self)")
	if err != nil {
		return err
	}
	c, err := g.adminClient()
	if err != nil {
		return err
	}
	defer c.Close()
	if *self {
		var h protocol.Health
		if _, err := c.getJSON("/healthz", &h); err != nil {
			return err
		}
		if h.Node == "" {
			return fmt.Errorf("drain --self: /healthz names no node")
		}
		pos = []string{h.Node}
	}
	var ans protocol.NodeState
	if _, err := c.callJSON(http.MethodPost, "/v1/nodes/"+url.PathEscape(pos[0])+"/drain", &ans); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: %s (clients are told to reconnect elsewhere; the node leaves when they are gone)\n", ans.Node, ans.State)
	return err
}

func cmdLeaderTransfer(g *globals, args []string, stdout io.Writer) error {
	fs := commandFlags("leader-transfer", g)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := positional(fs, 0, ""); err != nil {
		return err
	}
	c, err := g.adminClient()
	if err != nil {
		return err
	}
	defer c.Close()
	var ans protocol.LeadershipTransfer
	if _, err := c.callJSON(http.MethodPost, "/v1/raft/transfer-leadership", &ans); err != nil {
		return err
	}
	leader := ans.Leader
	if leader == "" || leader == ans.Previous {
		leader = c.awaitNewLeader(ans.Previous, 5*time.Second)
	}
	if leader == "" {
		leader = "(election still in progress; see sbctl status)"
	}
	_, err = fmt.Fprintf(stdout, "leadership transferred from %s to %s\n", dash(ans.Previous), leader)
	return err
}

// awaitNewLeader polls the cluster until a leader other than prev is
// known, or wait passes ("" then). The transfer answer often comes before
// the new leader's first heartbeat has reached the node we asked.
func (c *adminClient) awaitNewLeader(prev string, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		var ci protocol.Cluster
		if _, err := c.getJSON("/v1/cluster", &ci); err == nil && ci.Leader != "" && ci.Leader != prev {
			return ci.Leader
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

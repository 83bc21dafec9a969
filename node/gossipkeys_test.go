package node

import (
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard/switchboard/membership"
	"github.com/switchboard/switchboard/protocol"
)

// ring is a node's keyring as fingerprints, the primary first.
func ring(node string, fps ...string) nodeKeyring {
	r := nodeKeyring{node: node}
	for i, fp := range fps {
		r.keys = append(r.keys, membership.KeyInfo{Fingerprint: fp, Primary: i == 0})
	}
	return r
}

func failed(node string, err error) nodeKeyring { return nodeKeyring{node: node, err: err} }

var errGone = errors.New("connection refused")

func TestSummarizeKeys(t *testing.T) {
	tests := []struct {
		name  string
		rings []nodeKeyring
		want  protocol.GossipKeys
	}{
		{"one key everywhere", []nodeKeyring{ring("n1", "a"), ring("n2", "a")}, protocol.GossipKeys{
			Encrypted: true, Nodes: 2, Keys: []protocol.GossipKeyInfo{{Fingerprint: "a", Primary: true, Nodes: 2, PrimaryOn: 2}},
		}},
		{"installed on some", []nodeKeyring{ring("n1", "a", "b"), ring("n2", "a"), ring("n3", "a", "b")}, protocol.GossipKeys{
			Encrypted: true, Nodes: 3, Keys: []protocol.GossipKeyInfo{
				{Fingerprint: "a", Primary: true, Nodes: 3, PrimaryOn: 3},
				{Fingerprint: "b", Nodes: 2},
			},
		}},
		{"primary split, one unreachable", []nodeKeyring{ring("n1", "b", "a"), failed("n4", errGone), ring("n2", "a", "b"), ring("n3", "b", "a")}, protocol.GossipKeys{
			Encrypted: true, Nodes: 3, Unreachable: []string{"n4"}, Keys: []protocol.GossipKeyInfo{
				{Fingerprint: "b", Nodes: 3, PrimaryOn: 2},
				{Fingerprint: "a", Nodes: 3, PrimaryOn: 1},
			},
		}},
		{"no encryption", []nodeKeyring{failed("n1", membership.ErrEncryptionOff), failed("n2", membership.ErrEncryptionOff)}, protocol.GossipKeys{
			Nodes: 2, Keys: []protocol.GossipKeyInfo{},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarizeKeys(tt.want.Encrypted, tt.rings)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("summarizeKeys =\n%+v, want\n%+v", got, tt.want)
			}
		})
	}
}

func TestPlanKeyOp(t *testing.T) {
	all := []nodeKeyring{ring("n1", "a", "b"), ring("n2", "a", "b"), ring("n3", "a")}
	tests := []struct {
		name    string
		rings   []nodeKeyring
		op      membership.KeyOp
		fp      string
		apply   []string
		nodes   []protocol.GossipKeyNode
		status  int    // of the refusal; 0: none
		message string // in the refusal
	}{
		{name: "install everywhere", rings: all, op: membership.KeyInstall, fp: "b", apply: []string{"n1", "n2", "n3"}},
		{name: "use where all hold it", rings: all, op: membership.KeyUse, fp: "a", apply: []string{"n1", "n2", "n3"}},
		{name: "use what n3 lacks", rings: all, op: membership.KeyUse, fp: "b",
			nodes:  []protocol.GossipKeyNode{{Node: "n3", Error: "key not installed here"}},
			status: http.StatusConflict, message: "key b is not installed on n3: install it first; nothing changed"},
		{name: "remove where installed", rings: all, op: membership.KeyRemove, fp: "b", apply: []string{"n1", "n2"},
			nodes: []protocol.GossipKeyNode{{Node: "n3", OK: true}}},
		{name: "remove a primary", rings: []nodeKeyring{ring("n1", "b", "a"), ring("n2", "a", "b")}, op: membership.KeyRemove, fp: "a",
			nodes:  []protocol.GossipKeyNode{{Node: "n2", Error: "key is the primary here"}},
			status: http.StatusConflict, message: "key a is the primary on n2: use another key first"},
		{name: "remove what nobody holds", rings: all, op: membership.KeyRemove, fp: "c",
			status: http.StatusConflict, message: "no live node holds key c"},
		{name: "a node cannot be asked", rings: []nodeKeyring{ring("n1", "a"), failed("n2", errGone)}, op: membership.KeyInstall, fp: "b",
			nodes:  []protocol.GossipKeyNode{{Node: "n2", Error: "unreachable: connection refused"}},
			status: http.StatusServiceUnavailable, message: "n2 could not be asked for its keyring: nothing changed"},
		{name: "a node does not encrypt", rings: []nodeKeyring{ring("n1", "a"), failed("n2", membership.ErrEncryptionOff)}, op: membership.KeyInstall, fp: "b",
			nodes:  []protocol.GossipKeyNode{{Node: "n2", Error: "gossip encryption is off"}},
			status: http.StatusConflict, message: "gossip encryption is off on n2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planKeyOp(tt.rings, tt.op, tt.fp)
			if !slices.Equal(p.apply, tt.apply) || !slices.Equal(p.nodes, tt.nodes) {
				t.Fatalf("plan %v; want apply %v, nodes %+v", p, tt.apply, tt.nodes)
			}
			switch {
			case tt.status == 0 && p.err != nil:
				t.Fatalf("refused: %v", p.err)
			case tt.status != 0 && (protocol.StatusOf(p.err) != tt.status || !strings.Contains(p.err.Error(), tt.message)):
				t.Fatalf("err %v (%d), want %d %q", p.err, protocol.StatusOf(p.err), tt.status, tt.message)
			}
		})
	}
}

func TestKeyOpError(t *testing.T) {
	ok := keyOutcome{GossipKeyNode: protocol.GossipKeyNode{Node: "n1", OK: true, Changed: true}}
	refused := keyOutcome{GossipKeyNode: protocol.GossipKeyNode{Node: "n2", Error: "gossip key not installed"}}
	gone := keyOutcome{GossipKeyNode: protocol.GossipKeyNode{Node: "n3", Error: "unreachable: timeout"}, unreachable: true}
	for _, tt := range []struct {
		outcomes []keyOutcome
		status   int
		message  string
	}{
		{[]keyOutcome{ok}, 0, ""},
		{[]keyOutcome{ok, refused}, http.StatusConflict, "n2 refused"},
		{[]keyOutcome{gone, ok, refused}, http.StatusServiceUnavailable, "n3 could not be reached"},
	} {
		err := keyOpError(tt.outcomes)
		switch {
		case tt.status == 0 && err != nil:
			t.Fatalf("%+v: %v", tt.outcomes, err)
		case tt.status != 0 && (protocol.StatusOf(err) != tt.status || !strings.Contains(err.Error(), tt.message)):
			t.Fatalf("%+v: err %v, want %d %q", tt.outcomes, err, tt.status, tt.message)
		}
	}
}

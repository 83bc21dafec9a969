// Package kubernetes holds the Switchboard manifests (kustomize-ready) and
// the test that validates them: it is a module of its own so that the main
// module does not grow the Kubernetes API dependencies.
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization this directory
// uses; decoding it strictly catches a misspelt or unexpected field.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Resources []string `json:"resources"`
	Images    []image  `json:"images"`
}

// image is a kustomize image override.
type image struct {
	Name    string `json:"name"`
	NewName string `json:"newName"`
	NewTag  string `json:"newTag"`
	Digest  string `json:"digest"`
}

// manifests is every object of every resource file, by type.
type manifests struct {
	namespaces   []*corev1.Namespace
	secrets      []*corev1.Secret
	services     []*corev1.Service
	statefulSets []*appsv1.StatefulSet
	pdbs         []*policyv1.PodDisruptionBudget
}

func load(t *testing.T) (*kustomization, *manifests) {
	t.Helper()
	b, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}

	// Every manifest of the directory is listed, and every listed file exists.
	files, err := filepath.Glob("*.y*ml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not listed in kustomization.yaml resources", f)
		}
	}
	m := &manifests{}
	for _, f := range k.Resources {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("resource %s: %v", f, err)
		}
		docs := splitDocs(t, f, b)
		if len(docs) == 0 {
			t.Errorf("%s holds no object", f)
		}
		for i, doc := range docs {
			if err := m.decode(doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	return &k, m
}

// splitDocs returns the non-empty YAML documents of a file.
func splitDocs(t *testing.T, name string, b []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(probe) > 0 {
			docs = append(docs, doc)
		}
	}
}

// decode decodes one document strictly (an unknown or duplicate field
// fails) into the API type its apiVersion and kind name.
func (m *manifests) decode(doc []byte) error {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	strict := func(v any) error { return yaml.UnmarshalStrict(doc, v) }
	var err error
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		v := &corev1.Namespace{}
		err = strict(v)
		m.namespaces = append(m.namespaces, v)
	case "v1 Secret":
		v := &corev1.Secret{}
		err = strict(v)
		m.secrets = append(m.secrets, v)
	case "v1 Service":
		v := &corev1.Service{}
		err = strict(v)
		m.services = append(m.services, v)
	case "apps/v1 StatefulSet":
		v := &appsv1.StatefulSet{}
		err = strict(v)
		m.statefulSets = append(m.statefulSets, v)
	case "policy/v1 PodDisruptionBudget":
		v := &policyv1.PodDisruptionBudget{}
		err = strict(v)
		m.pdbs = append(m.pdbs, v)
	default:
		return fmt.Errorf("no API type known for apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	return err
}

// flagNames parses the flag names a command defines from its Go source
// (fs.StringVar(&x, "name", …), fs.Bool("name", …), fs.Var(v, "name", …)).
func flagNames(t *testing.T, dir string) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			arg := -1
			switch sel.Sel.Name {
			case "Bool", "String", "Int", "Int64", "Uint", "Uint64", "Float64", "Duration":
				arg = 0
			case "BoolVar", "StringVar", "IntVar", "Int64Var", "UintVar", "Uint64Var", "Float64Var", "DurationVar", "Var", "TextVar", "Func", "BoolFunc":
				arg = 1
				if sel.Sel.Name == "Func" || sel.Sel.Name == "BoolFunc" {
					arg = 0
				}
			}
			if arg < 0 || len(call.Args) <= arg {
				return true
			}
			if lit, ok := call.Args[arg].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					names[s] = true
				}
			}
			return true
		})
	}
	return names
}

// sourceStrings returns the string literals of a package's non-test
// source that match re.
func sourceStrings(t *testing.T, dir string, re *regexp.Regexp) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range re.FindAllString(string(b), -1) {
			out[s] = true
		}
	}
	return out
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	k, m := load(t)
	if len(m.statefulSets) != 1 || len(m.pdbs) != 1 || len(m.services) < 3 || len(m.secrets) < 2 {
		t.Fatalf("want one StatefulSet, one PodDisruptionBudget, three Services, two Secrets; got %d, %d, %d, %d",
			len(m.statefulSets), len(m.pdbs), len(m.services), len(m.secrets))
	}
	if len(m.namespaces) == 1 && k.Namespace != m.namespaces[0].Name {
		t.Errorf("kustomization namespace %q, Namespace manifest %q", k.Namespace, m.namespaces[0].Name)
	}
}

// A deliberately wrong manifest is refused: the strictness is real.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	var m manifests
	bad := []byte("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec:\n  maxUnavailabel: 1\n")
	if err := m.decode(bad); err == nil {
		t.Fatal("a misspelt field decoded without an error")
	}
	if err := m.decode([]byte("apiVersion: v9\nkind: Thing\n")); err == nil {
		t.Fatal("an unknown kind decoded without an error")
	}
}

// Secrets are templates: nothing real is committed, every key is there
// for the node to be given, and empty values stop a node at start.
func TestSecretsAreEmptyTemplates(t *testing.T) {
	_, m := load(t)
	for _, s := range m.secrets {
		if len(s.Data) > 0 {
			t.Errorf("Secret %s has data: commit templates only (stringData with empty values)", s.Name)
		}
		if len(s.StringData) == 0 {
			t.Errorf("Secret %s lists no keys", s.Name)
		}
		for key, v := range s.StringData {
			if v != "" {
				t.Errorf("Secret %s key %s has a value: commit templates only", s.Name, key)
			}
		}
	}
}

func TestStatefulSet(t *testing.T) {
	k, m := load(t)
	sts := m.statefulSets[0]
	pod := sts.Spec.Template
	podLabels := labels.Set(pod.Labels)
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}
	if replicas < 3 {
		t.Errorf("replicas %d: a quorum that survives a zone needs 3", replicas)
	}
	sel, err := metaSelector(sts.Spec.Selector.MatchLabels)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("the StatefulSet's selector does not match its pod labels")
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: want Parallel, so that --bootstrap-expect sees every pod start", sts.Spec.PodManagementPolicy)
	}
	if u := sts.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Errorf("updateStrategy %q: want RollingUpdate", u.Type)
	}

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if img := c.Image; !strings.HasPrefix(img, "switchboard:") || !slices.ContainsFunc(k.Images, func(i image) bool { return i.Name == "switchboard" }) {
		t.Errorf("image %q: want switchboard:TAG, overridable by the kustomization's images", img)
	}

	// Environment: names, and the $(VAR) references args make.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	fieldRef := func(name string) string {
		if e, ok := env[name]; ok && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
		return ""
	}
	switchboardFlags := flagNames(t, "../../cmd/switchboard")
	for _, must := range []string{"node-id", "join", "bootstrap-expect", "tls-cert-file", "drain-timeout"} {
		if !switchboardFlags[must] {
			t.Fatalf("flag %q not found in ../../cmd/switchboard: the flag parser is broken (%d flags found)", must, len(switchboardFlags))
		}
	}
	sbctlEnv := sourceStrings(t, "../../cmd/sbctl", regexp.MustCompile(`SWITCHBOARD_[A-Z0-9_]+`))

	// flags: what the node is given, from args (--name=value) and from
	// SWITCHBOARD_<FLAG> variables, as cmd/switchboard maps them.
	flags := map[string]string{}
	for _, e := range c.Env {
		name, ok := strings.CutPrefix(e.Name, "SWITCHBOARD_")
		if !ok {
			continue
		}
		flag := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		switch {
		case switchboardFlags[flag]:
			flags[flag] = e.Value
			if e.ValueFrom != nil {
				flags[flag] = "$(" + e.Name + ")"
			}
		case sbctlEnv[e.Name]:
		default:
			t.Errorf("env %s: no switchboard flag --%s, and sbctl reads no such variable", e.Name, flag)
		}
	}
	varRef := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		for _, ref := range varRef.FindAllStringSubmatch(a, -1) {
			if _, ok := env[ref[1]]; !ok {
				t.Errorf("arg %q: $(%s) is not a variable of the container (the kubelet would leave it as text)", a, ref[1])
			}
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("arg %q: want --flag=value", a)
			continue
		}
		if !switchboardFlags[name] {
			t.Errorf("arg %q: cmd/switchboard has no flag --%s", a, name)
		}
		if _, dup := flags[name]; dup {
			t.Errorf("flag --%s given twice (args and environment)", name)
		}
		flags[name] = value
	}
	for _, must := range []string{"node-id", "region", "zone", "data-dir", "public-addr", "cluster-addr", "gossip-addr",
		"advertise-public", "advertise-cluster", "join", "bootstrap-expect", "token-secret-file", "api-key-file",
		"admin-key-file", "gossip-key-file", "tls-cert-file", "tls-key-file", "cluster-ca-file", "cluster-cert-file", "cluster-key-file"} {
		if flags[must] == "" {
			t.Errorf("flag --%s is not given", must)
		}
	}
	if flags["bootstrap"] != "" {
		t.Errorf("--bootstrap in a pod template would bootstrap every pod: use --bootstrap-expect")
	}

	// Identity and place from the downward API.
	if flags["node-id"] != "$(POD_NAME)" || fieldRef("POD_NAME") != "metadata.name" {
		t.Errorf("--node-id %q: want $(POD_NAME) from metadata.name (stable across restarts)", flags["node-id"])
	}
	if fieldRef("SWITCHBOARD_ZONE") != "metadata.labels['topology.kubernetes.io/zone']" ||
		fieldRef("SWITCHBOARD_REGION") != "metadata.labels['topology.kubernetes.io/region']" {
		t.Errorf("region and zone must come from the pod's topology labels")
	}
	if !strings.HasPrefix(flags["gossip-addr"], "$(POD_IP):") || fieldRef("POD_IP") != "status.podIP" {
		t.Errorf("--gossip-addr %q: want $(POD_IP):PORT from status.podIP (gossip advertises an IP)", flags["gossip-addr"])
	}

	// Bootstrap and join: every pod of the first formation, through the
	// headless service's per-pod names.
	if n, err := strconv.Atoi(flags["bootstrap-expect"]); err != nil || int32(n) != replicas {
		t.Errorf("--bootstrap-expect %q: want the replicas, %d", flags["bootstrap-expect"], replicas)
	}
	peers := service(m, sts.Spec.ServiceName)
	if peers == nil {
		t.Fatalf("serviceName %q: no such Service", sts.Spec.ServiceName)
	}
	if peers.Spec.ClusterIP != corev1.ClusterIPNone || !peers.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: want headless (clusterIP None) and publishNotReadyAddresses, so pods find each other before they are ready", peers.Name)
	}
	_, gossipPort, _ := net.SplitHostPort(flags["gossip-addr"])
	joins := strings.Split(flags["join"], ",")
	for i := range replicas {
		want := fmt.Sprintf("%s-%d.%s.$(POD_NAMESPACE).svc:%s", sts.Name, i, peers.Name, gossipPort)
		if !slices.Contains(joins, want) {
			t.Errorf("--join %q lacks %s", flags["join"], want)
		}
	}
	for _, f := range []string{"advertise-public", "advertise-cluster"} {
		if !strings.HasPrefix(flags[f], "$(POD_NAME)."+peers.Name+".$(POD_NAMESPACE).svc:") {
			t.Errorf("--%s %q: want the pod's stable name under %s", f, flags[f], peers.Name)
		}
	}

	// Ports: every listener is a named container port.
	ports := map[string]corev1.ContainerPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
	}
	portOf := func(addr string) int32 {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("address %q: %v", addr, err)
		}
		n, _ := strconv.Atoi(p)
		return int32(n)
	}
	for name, flag := range map[string]string{"public": "public-addr", "cluster": "cluster-addr", "gossip": "gossip-addr", "admin": "admin-addr"} {
		if p, ok := ports[name]; !ok || p.ContainerPort != portOf(flags[flag]) {
			t.Errorf("container port %q does not match --%s %q", name, flag, flags[flag])
		}
	}
	if p, ok := ports["gossip-udp"]; !ok || p.Protocol != corev1.ProtocolUDP || p.ContainerPort != portOf(flags["gossip-addr"]) {
		t.Errorf("gossip needs UDP on its port too")
	}

	// Probes: /readyz and /healthz on the public listener, HTTPS with TLS.
	scheme := corev1.URISchemeHTTP
	if flags["tls-cert-file"] != "" {
		scheme = corev1.URISchemeHTTPS
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet %s", p.name, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Scheme != scheme || g.Port != intstr.FromString("public") {
			t.Errorf("%s probe: %s %s port %s, want %s %s port public", p.name, g.Scheme, g.Path, g.Port.String(), scheme, p.path)
		}
	}

	// Stopping drains: preStop runs sbctl drain --self against this node's
	// admin listener, and the grace period covers the drain.
	pre := c.Lifecycle
	if pre == nil || pre.PreStop == nil || pre.PreStop.Exec == nil ||
		!slices.Equal(pre.PreStop.Exec.Command, []string{"/usr/local/bin/sbctl", "drain", "--self"}) {
		t.Errorf("preStop: want exec /usr/local/bin/sbctl drain --self (the image has no shell)")
	}
	if !flagNames(t, "../../cmd/sbctl")["self"] {
		t.Errorf("sbctl has no --self flag")
	}
	if want := fmt.Sprintf("https://127.0.0.1:%d", portOf(flags["admin-addr"])); env["SWITCHBOARD_ADDR"].Value != want {
		t.Errorf("SWITCHBOARD_ADDR %q: want %s, for sbctl in the preStop hook", env["SWITCHBOARD_ADDR"].Value, want)
	}
	if env["SWITCHBOARD_CA_FILE"].Value != flags["cluster-ca-file"] {
		t.Errorf("SWITCHBOARD_CA_FILE %q: want the CA of the node certificates, %s", env["SWITCHBOARD_CA_FILE"].Value, flags["cluster-ca-file"])
	}
	const adminDrainBudget = 30 // seconds: the admin API's drain (docs/operations.md)
	drain := adminDrainBudget
	if d := flags["drain-timeout"]; d != "" {
		n, err := strconv.Atoi(strings.TrimSuffix(d, "s"))
		if err != nil {
			t.Errorf("--drain-timeout %q: want whole seconds", d)
		}
		drain = max(drain, n)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < int64(drain+15) {
		t.Errorf("terminationGracePeriodSeconds %v: want at least the drain (%d s) plus 15 s for leave and close", g, drain)
	}

	// Security: non-root, read-only, no privilege, no capability, seccomp.
	psc, sc := pod.Spec.SecurityContext, c.SecurityContext
	if sc == nil || psc == nil {
		t.Fatal("pod and container securityContext required")
	}
	if !isTrue(sc.RunAsNonRoot) && !isTrue(psc.RunAsNonRoot) {
		t.Error("runAsNonRoot is not set")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not set")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if isTrue(sc.Privileged) {
		t.Error("privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Error("capabilities: want drop [ALL], add none")
	}
	for _, s := range []*corev1.SeccompProfile{sc.SeccompProfile, psc.SeccompProfile} {
		if s == nil || s.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Error("seccompProfile: want RuntimeDefault on the pod and the container")
		}
	}

	// Zones: pods spread over them.
	if !slices.ContainsFunc(pod.Spec.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool {
		if c.LabelSelector == nil {
			return false
		}
		s, err := metaSelector(c.LabelSelector.MatchLabels)
		return c.TopologyKey == "topology.kubernetes.io/zone" && c.MaxSkew == 1 && err == nil && s.Matches(podLabels)
	}) {
		t.Error("no topologySpreadConstraint over topology.kubernetes.io/zone (maxSkew 1) selecting these pods")
	}

	// Volumes: the data dir on the claim template, every file flag on a
	// mounted Secret that has that key (for every pod).
	mounts := map[string]string{} // mount path → volume
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	var claims []string
	for _, vc := range sts.Spec.VolumeClaimTemplates {
		claims = append(claims, vc.Name)
	}
	if v := mounts[flags["data-dir"]]; v == "" || !slices.Contains(claims, v) {
		t.Errorf("--data-dir %q is not a volumeClaimTemplate's mount", flags["data-dir"])
	}
	secretOf := map[string]*corev1.Secret{} // volume → secret
	for _, v := range pod.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		s := secret(m, v.Secret.SecretName)
		if s == nil {
			t.Errorf("volume %s mounts Secret %q, which is not among the manifests", v.Name, v.Secret.SecretName)
			continue
		}
		secretOf[v.Name] = s
	}
	files := 0
	for flag, path := range flags {
		if !strings.HasSuffix(flag, "-file") {
			continue
		}
		files++
		dir, base := filepath.Split(path)
		s := secretOf[mounts[filepath.Clean(dir)]]
		if s == nil {
			t.Errorf("--%s %q is not in a mounted Secret", flag, path)
			continue
		}
		for i := range replicas {
			key := strings.ReplaceAll(base, "$(POD_NAME)", fmt.Sprintf("%s-%d", sts.Name, i))
			if _, ok := s.StringData[key]; !ok {
				t.Errorf("--%s %q: Secret %s has no key %q", flag, path, s.Name, key)
			}
		}
	}
	if files < 9 {
		t.Errorf("only %d file flags checked", files)
	}
	if mounts["/tmp"] == "" {
		t.Error("/tmp is not a volume: with a read-only root nothing could write there")
	}
}

func TestServicesAndDisruptionBudget(t *testing.T) {
	_, m := load(t)
	sts := m.statefulSets[0]
	pod := sts.Spec.Template
	named := map[string]bool{}
	for _, p := range pod.Spec.Containers[0].Ports {
		named[p.Name] = true
	}
	for _, s := range m.services {
		sel, err := metaSelector(s.Spec.Selector)
		if err != nil || len(s.Spec.Selector) == 0 || !sel.Matches(labels.Set(pod.Labels)) {
			t.Errorf("Service %s does not select the Switchboard pods", s.Name)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String || !named[p.TargetPort.StrVal] {
				t.Errorf("Service %s port %s: targetPort %s is not a named container port", s.Name, p.Name, p.TargetPort.String())
			}
		}
	}
	for name, port := range map[string]string{"switchboard": "public", "switchboard-admin": "admin"} {
		s := service(m, name)
		if s == nil || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.TargetPort.StrVal == port }) {
			t.Errorf("want Service %s exposing the %s port", name, port)
		}
	}

	pdb := m.pdbs[0]
	if mu := pdb.Spec.MaxUnavailable; mu == nil || *mu != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget %s: want maxUnavailable 1 (and no minAvailable)", pdb.Name)
	}
	if sel, err := metaSelector(pdb.Spec.Selector.MatchLabels); err != nil || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("PodDisruptionBudget %s does not select the Switchboard pods", pdb.Name)
	}
}

// The node accepts the container's arguments and environment as the kubelet
// expands them for switchboard-0: started with them (the mounted files
// pointed at an empty directory), it gets past every flag and value and
// stops at the first missing secret file.
func TestContainerArgsParse(t *testing.T) {
	_, m := load(t)
	sts := m.statefulSets[0]
	c := sts.Spec.Template.Spec.Containers[0]
	bin := filepath.Join(t.TempDir(), "switchboard")
	if out, err := exec.Command("go", "build", "-C", "../..", "-o", bin, "./cmd/switchboard").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/switchboard: %v\n%s", err, out)
	}
	missing := t.TempDir()
	vars := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil && f.FieldRef != nil {
			v = map[string]string{
				"metadata.name":      sts.Name + "-0",
				"metadata.namespace": "switchboard",
				"status.podIP":       "127.0.0.1",
				"metadata.labels['topology.kubernetes.io/region']": "r1",
				"metadata.labels['topology.kubernetes.io/zone']":   "a",
			}[f.FieldRef.FieldPath]
			if v == "" {
				t.Fatalf("env %s: no test value for fieldRef %s", e.Name, f.FieldRef.FieldPath)
			}
		}
		vars[e.Name] = strings.ReplaceAll(v, "/etc/switchboard", missing)
	}
	expand := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var args []string
	for _, a := range c.Args {
		a = expand.ReplaceAllStringFunc(a, func(ref string) string { return vars[ref[2:len(ref)-1]] })
		args = append(args, strings.ReplaceAll(a, "/etc/switchboard", missing))
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	// The last line is the error the node stopped with; a bad flag would
	// print the usage (naming every flag) and its own error instead.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err == nil || !strings.HasPrefix(lines[len(lines)-1], "switchboard: --token-secret-file:") {
		t.Fatalf("switchboard %s: %v\n%s\nwant every flag and value accepted, and a stop at the missing token secret file", strings.Join(args, " "), err, out)
	}
}

func metaSelector(ml map[string]string) (labels.Selector, error) {
	if len(ml) == 0 {
		return nil, errors.New("empty selector")
	}
	return labels.SelectorFromSet(ml), nil
}

func service(m *manifests, name string) *corev1.Service {
	for _, s := range m.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func secret(m *manifests, name string) *corev1.Secret {
	for _, s := range m.secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func isTrue(b *bool) bool { return b != nil && *b }

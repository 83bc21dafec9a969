package testenv

import (
	"fmt"
	"testing"
)

// recorder stands in for a test so Require's skip or failure can be seen
// without ending the real test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ok          bool
		requireAll  string
		wantSkipped string
		wantFailed  string
	}{
		{name: "available", ok: true},
		{name: "available in CI", ok: true, requireAll: "1"},
		{name: "missing locally skips", ok: false, wantSkipped: "no toxiproxy"},
		{name: "missing in CI fails", ok: false, requireAll: "1", wantFailed: "required: no toxiproxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(RequireAllEnv, tc.requireAll)
			r := &recorder{TB: t}
			Require(r, tc.ok, "no toxiproxy")
			if r.skipped != tc.wantSkipped || r.failed != tc.wantFailed {
				t.Errorf("skipped %q, failed %q; want %q, %q", r.skipped, r.failed, tc.wantSkipped, tc.wantFailed)
			}
		})
	}
}

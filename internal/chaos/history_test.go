package chaos

import "testing"

// TestEnumNames pins the names that reports and event logs print.
func TestEnumNames(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{OpWrite.String(), "write"}, {OpRead.String(), "read"}, {OpFlush.String(), "flush"},
		{OpKind(0).String(), "op0"}, {OpKind(9).String(), "op9"},
		{OK.String(), "ok"}, {Failed.String(), "failed"}, {Unknown.String(), "unknown"},
		{Outcome(0).String(), "outcome0"}, {Outcome(7).String(), "outcome7"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

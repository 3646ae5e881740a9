// Package planted runs a package's tests built with a planted bug: a build
// tag (grbd_plantedbug_*) that breaks one rule, so that a test can show
// that the test guarding the rule fails without it. Only tests import it.
package planted

import (
	"os"
	"os/exec"
	"testing"
)

// GoTest runs `go test -count=1 -tags tag -run run args... .` in the
// calling test's package directory and returns its combined output and
// error (an exit status when a test failed). It skips t where no go tool
// can build the package; the caller's GOFLAGS are not passed on, so that
// -race or -short of the outer run do not change the inner one.
func GoTest(t testing.TB, tag, run string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool to build the planted bug")
	}
	argv := append([]string{"test", "-count=1", "-tags", tag, "-run", run}, args...)
	cmd := exec.Command("go", append(argv, ".")...)
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

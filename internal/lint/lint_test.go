// Package lint holds tests that enforce project rules the compiler cannot:
// the decision logic of grbd (replication acknowledgement, quorum) stays a
// deterministic state machine, fed events and ticks, with no I/O, clocks or
// goroutines inside, so a seeded simulation can drive a whole cluster; and
// every test sampled under the race detector also runs in full in make test.
package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// pureDirs are the packages whose non-test code must be deterministic.
var pureDirs = []string{"replicator", "quorum"}

// forbidden imports bring sockets, files, wall clocks or processes.
var forbidden = map[string]bool{
	"net": true, "net/http": true, "os": true, "os/exec": true, "os/signal": true,
	"syscall": true, "time": true, "math/rand": true, "math/rand/v2": true, "crypto/rand": true,
}

func TestPureCores(t *testing.T) {
	root := filepath.Join("..", "..")
	checked := 0
	for _, dir := range pureDirs {
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			checked++
			t.Run(filepath.Join(dir, filepath.Base(f)), func(t *testing.T) {
				for _, problem := range impurities(t, f) {
					t.Error(problem)
				}
			})
		}
	}
	if _, err := os.Stat(filepath.Join(root, "replicator")); err == nil {
		require.Positive(t, checked, "no files checked: the rule would pass vacuously")
	}
}

// impurities lists forbidden imports and go statements in one file.
func impurities(t *testing.T, path string) []string {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	require.NoError(t, err)
	var out []string
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if forbidden[p] {
			out = append(out, fset.Position(imp.Pos()).String()+": imports "+p+" (pure cores take events and ticks; I/O belongs in the driver)")
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if g, ok := n.(*ast.GoStmt); ok {
			out = append(out, fset.Position(g.Pos()).String()+": starts a goroutine (pure cores are driven by their caller)")
		}
		return true
	})
	return out
}

// TestImpuritiesDetects proves the rule can fail.
func TestImpuritiesDetects(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.go")
	require.NoError(t, os.WriteFile(p, []byte("package x\nimport \"time\"\nfunc f() { go f(); _ = time.Now() }\n"), 0o644))
	got := impurities(t, p)
	require.Len(t, got, 2)
	require.Contains(t, got[0], "imports time")
	require.Contains(t, got[1], "starts a goroutine")
}

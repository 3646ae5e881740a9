package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const racetestPath = "github.com/grbd/grbd/internal/racetest"

// TestRaceSampledPackagesRunWithoutRace: a package whose tests sample or skip
// cases under the race detector (internal/racetest) must be in the Makefile's
// NORACE_PKGS, or make test would never run those cases in full.
func TestRaceSampledPackagesRunWithoutRace(t *testing.T) {
	root := filepath.Join("..", "..")
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	require.NoError(t, err)
	var users []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(f.Imports, func(imp *ast.ImportSpec) bool { return imp.Path.Value == strconv.Quote(racetestPath) }) {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			users = append(users, "./"+filepath.ToSlash(rel))
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, users, "no package uses internal/racetest: the rule would pass vacuously")
	require.Empty(t, unlisted(users, string(mk)), "packages that sample tests under -race but are missing from NORACE_PKGS")
}

// unlisted returns the packages of users that the Makefile's NORACE_PKGS
// line does not name (all of them when there is no such line).
func unlisted(users []string, makefile string) []string {
	m := regexp.MustCompile(`(?m)^NORACE_PKGS\s*:?=(.*)$`).FindStringSubmatch(makefile)
	var listed []string
	if m != nil {
		listed = strings.Fields(m[1])
	}
	var out []string
	for _, u := range users {
		if !slices.Contains(listed, u) && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// TestUnlistedDetects proves the rule can fail.
func TestUnlistedDetects(t *testing.T) {
	mk := "X := 1\nNORACE_PKGS := ./journal ./internal/wire\n"
	require.Empty(t, unlisted([]string{"./journal", "./internal/wire", "./journal"}, mk))
	require.Equal(t, []string{"./secondary"}, unlisted([]string{"./journal", "./secondary", "./secondary"}, mk))
	require.Equal(t, []string{"./journal"}, unlisted([]string{"./journal"}, "no such line\n"))
}

package chaos

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCountInLogs(t *testing.T) {
	dir := t.TempDir()
	line := `level=WARN msg="journal: blocks of extent records that ` + cutExtentLine + ` (never acknowledged)"` + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "n1.2.log"), []byte("x\n"+line), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "n1.3.log"), []byte(line), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "n0.1.log"), []byte("nothing\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "grbd.yaml"), []byte(line), 0o600))
	got, err := countInLogs(dir, cutExtentLine)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"n1": 2}, got)
}

// The note counts a line the journal logs: keep the two in step.
func TestCutExtentLineIsTheJournals(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "journal", "extent.go"))
	require.NoError(t, err)
	require.Contains(t, string(src), cutExtentLine)
}

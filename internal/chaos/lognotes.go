package chaos

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// cutExtentLine is what a node logs when replay finds blocks of extent
// records that the crash left without their data (journal verifyExtents):
// the report notes them, so that it shows the resync of a cut large write
// ran (docs/journal.md, "Block IDs").
const cutExtentLine = "replay cannot vouch for"

// countInLogs counts, per member, the lines of its logs in dir (NAME.N.log)
// that contain substr.
func countInLogs(dir, substr string) (map[string]int, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return nil, fmt.Errorf("chaos: logs: %w", err)
	}
	counts := map[string]int{}
	for _, p := range paths {
		name, _, ok := strings.Cut(filepath.Base(p), ".")
		if !ok {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("chaos: logs: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), substr) {
				counts[name]++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("chaos: logs: %s: %w", p, err)
		}
	}
	return counts, nil
}

// noteCutExtents notes the restarts whose replay found a large write cut
// short by the crash.
func (r *Run) noteCutExtents() {
	counts, err := countInLogs(r.C.cfg.Dir, cutExtentLine)
	if err != nil || len(counts) == 0 {
		return
	}
	var parts []string
	for name, n := range counts {
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	sort.Strings(parts)
	r.Note("restarts whose replay found extent blocks a crash cut (resynced as suspects): %s", strings.Join(parts, ", "))
}

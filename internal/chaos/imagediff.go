package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// diffRun is a run of adjacent BlockSize blocks that differ between two
// images (a block that only one image has counts as differing).
type diffRun struct{ first, blocks int64 }

// maxDiffRuns bounds what an anomaly lists.
const maxDiffRuns = 4

// imageDiff compares two image files block by block and returns up to
// maxDiffRuns runs of differing blocks and the number of differing blocks
// in all: what an "images differ" anomaly names, so that its report says
// where to look (run 95 named only two hashes).
func imageDiff(pathA, pathB string) (runs []diffRun, total int64, err error) {
	fa, err := os.Open(pathA)
	if err != nil {
		return nil, 0, fmt.Errorf("chaos: diff: %w", err)
	}
	defer fa.Close()
	fb, err := os.Open(pathB)
	if err != nil {
		return nil, 0, fmt.Errorf("chaos: diff: %w", err)
	}
	defer fb.Close()
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(a)) {
		na, erra := fa.ReadAt(a, off)
		nb, errb := fb.ReadAt(b, off)
		for _, e := range []error{erra, errb} {
			if e != nil && !errors.Is(e, io.EOF) {
				return runs, total, fmt.Errorf("chaos: diff: %w", e)
			}
		}
		for i := 0; i < max(na, nb); i += BlockSize {
			ba, bb := a[min(i, na):min(i+BlockSize, na)], b[min(i, nb):min(i+BlockSize, nb)]
			if bytes.Equal(ba, bb) {
				continue
			}
			blk := (off + int64(i)) / BlockSize
			total++
			if n := len(runs); n > 0 && runs[n-1].first+runs[n-1].blocks == blk {
				runs[n-1].blocks++
			} else if n < maxDiffRuns {
				runs = append(runs, diffRun{blk, 1})
			}
		}
		if na < len(a) && nb < len(b) {
			return runs, total, nil
		}
	}
}

// describeImageDiff says where two stopped data nodes' images differ.
func describeImageDiff(a, b *Member) string {
	runs, total, err := imageDiff(filepath.Join(a.DataDir, "data.img"), filepath.Join(b.DataDir, "data.img"))
	if err != nil {
		return err.Error()
	}
	return describeDiff(runs, total)
}

// describeDiff says where two images differ, for an anomaly.
func describeDiff(runs []diffRun, total int64) string {
	parts := make([]string, len(runs))
	for i, r := range runs {
		parts[i] = fmt.Sprintf("blocks %d-%d (offset %d, %d KiB)", r.first, r.first+r.blocks-1, r.first*BlockSize, r.blocks*BlockSize>>10)
	}
	return fmt.Sprintf("%d differing 4 KiB blocks; first runs: %s", total, strings.Join(parts, ", "))
}

package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Size is a byte count written in a config as a plain integer or with a binary
// suffix ("512MiB", "1GiB"). Decimal suffixes (MB, GB) are refused on purpose:
// an operator who writes 1GB for a disk almost always means 1GiB, and a silent
// 7% difference between nodes' device sizes is worse than an error.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
}

// ParseSize parses "4096", "64KiB", "1GiB", "2T" into bytes.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%w: empty size", ErrInvalid)
	}
	mult := int64(1)
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			mult, num = u.mult, strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: size %q: want a non-negative integer with an optional KiB/MiB/GiB/TiB suffix", ErrInvalid, s)
	}
	if n != 0 && mult > 1 && n > (1<<62)/mult {
		return 0, fmt.Errorf("%w: size %q overflows", ErrInvalid, s)
	}
	return Size(n * mult), nil
}

// String formats the size with the largest exact binary unit.
func (s Size) String() string {
	for _, u := range sizeUnits[:4] {
		if s != 0 && int64(s)%u.mult == 0 {
			return fmt.Sprintf("%d%s", int64(s)/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalYAML accepts an integer or a suffixed string.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "size must be a scalar")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeError(n, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
	}
	*s = v
	return nil
}

// MarshalYAML writes the human form.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// Duration is a time.Duration written as "500ms", "2s".
type Duration time.Duration

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "duration must be a scalar")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return typeError(n, fmt.Sprintf("duration %q: want e.g. 500ms or 2s", n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes Go duration syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// typeError reports a bad value the way yaml.v3 reports type mismatches,
// so that decoding goes on and every bad value in the file is reported
// (decodeErrors then locates each).
func typeError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

package metrics

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// ErrFormat marks text that is not valid exposition format.
var ErrFormat = errors.New("metrics: bad exposition format")

// Sample is one parsed sample line.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Family is one parsed metric family.
type Family struct {
	Name, Help, Type string
	Samples          []Sample
}

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$`)
	labelRE  = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)`)
)

// Parse reads text exposition format strictly enough to check what Writer
// writes (and what a Prometheus server would refuse): every sample belongs
// to a family declared by TYPE just before, no family appears twice,
// labels and values parse. It returns the families by name.
func Parse(r io.Reader) (map[string]*Family, error) {
	out := map[string]*Family{}
	var cur *Family
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, help, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("%w: line %d: family %s appears twice", ErrFormat, n, name)
			}
			cur = &Family{Name: name, Help: help}
			out[name] = cur
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			if cur == nil || cur.Name != name {
				return nil, fmt.Errorf("%w: line %d: TYPE %s without its HELP", ErrFormat, n, name)
			}
			switch typ {
			case "counter", "gauge", "histogram", "summary", "untyped":
			default:
				return nil, fmt.Errorf("%w: line %d: type %q", ErrFormat, n, typ)
			}
			cur.Type = typ
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			m := sampleRE.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("%w: line %d: %q", ErrFormat, n, line)
			}
			s := Sample{Name: m[1], Labels: map[string]string{}}
			if cur == nil || cur.Type == "" || !belongs(s.Name, cur) {
				return nil, fmt.Errorf("%w: line %d: sample %s outside its family", ErrFormat, n, s.Name)
			}
			for rest := m[3]; rest != ""; {
				l := labelRE.FindStringSubmatch(rest)
				if l == nil {
					return nil, fmt.Errorf("%w: line %d: labels %q", ErrFormat, n, m[3])
				}
				s.Labels[l[1]] = l[2]
				rest = rest[len(l[0]):]
			}
			v, err := strconv.ParseFloat(m[4], 64)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: value %q", ErrFormat, n, m[4])
			}
			s.Value = v
			cur.Samples = append(cur.Samples, s)
		}
	}
	return out, sc.Err()
}

func belongs(sample string, f *Family) bool {
	if sample == f.Name {
		return f.Type != "histogram"
	}
	if f.Type != "histogram" {
		return false
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if sample == f.Name+suffix {
			return true
		}
	}
	return false
}

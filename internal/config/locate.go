package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decodeErrors turns the decoder's errors (unknown keys, wrong types, bad
// sizes and durations) into FieldErrors that name the file, the line and
// the field, as validate's own errors do.
func decodeErrors(name string, root *yaml.Node, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %w: %s", name, ErrInvalid, trimYAML(err))
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		m := lineRE.FindStringSubmatch(msg)
		if m == nil {
			errs = append(errs, fmt.Errorf("%s: %w: %s", name, ErrInvalid, msg))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		text := strings.TrimPrefix(m[2], ErrInvalid.Error()+": ")
		field := fieldAt(root, line, "")
		if u := unknownRE.FindStringSubmatch(text); u != nil {
			field = fieldAt(root, line, u[1])
			text = fmt.Sprintf("unknown field %q", u[1])
			if known := knownFields(u[2]); known != "" {
				text += "; known fields here: " + known
			}
		}
		errs = append(errs, &FieldError{File: name, Line: line, Field: field, Msg: text})
	}
	return errors.Join(errs...)
}

var (
	lineRE    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
)

// fieldAt returns the dotted path of the key on line (named key, when not
// empty), or "" when there is none.
func fieldAt(root *yaml.Node, line int, key string) string {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	var walk func(n *yaml.Node, path string) string
	walk = func(n *yaml.Node, path string) string {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				if found := walk(v, p); found != "" {
					return found
				}
				if k.Line == line && (key == "" || k.Value == key) {
					return p
				}
			}
		case yaml.SequenceNode:
			for i, v := range n.Content {
				if found := walk(v, fmt.Sprintf("%s[%d]", path, i)); found != "" {
					return found
				}
			}
		}
		return ""
	}
	return walk(n, "")
}

// configTypes are the structs of the file, by the name the decoder gives.
var configTypes = map[string]reflect.Type{
	"config.Config": reflect.TypeFor[Config](), "config.Device": reflect.TypeFor[Device](),
	"config.Journal": reflect.TypeFor[Journal](), "config.NBD": reflect.TypeFor[NBD](),
	"config.Replication": reflect.TypeFor[Replication](), "config.Quorum": reflect.TypeFor[Quorum](),
	"config.Member": reflect.TypeFor[Member](),
}

// knownFields lists the keys a struct of the file accepts (a typo's
// likely intent).
func knownFields(typeName string) string {
	t, ok := configTypes[typeName]
	if !ok {
		return ""
	}
	var keys []string
	for f := range t.Fields() {
		if k, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); k != "" && k != "-" {
			keys = append(keys, k)
		}
	}
	return strings.Join(keys, ", ")
}

package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// Strict decodes data, which must be exactly one JSON object, into v, a
// pointer to a struct, refusing what encoding/json would let through and
// what two readers of the same bytes could read differently:
//   - a key that is not the exact JSON name of one of v's fields, including
//     a key that differs from one only by case (encoding/json would match
//     it);
//   - a key that appears twice (encoding/json keeps the last, a gateway
//     may read the first);
//   - invalid UTF-8 (encoding/json would replace it);
//   - anything but whitespace after the object.
//
// Nested values are checked for their types only; the example's bodies and
// commands have none.
func Strict(data []byte, v any) error {
	if !utf8.Valid(data) {
		return errors.New("the body is not valid UTF-8")
	}
	names, err := jsonNames(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the body is empty")
		}
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("the body must be a JSON object")
	}
	seen := make(map[string]bool, len(names))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string) // a key is always a string
		if !names[key] {
			for name := range names {
				if strings.EqualFold(name, key) {
					return fmt.Errorf("unknown field %q (did you mean %q? names are case-sensitive)", key, name)
				}
			}
			return fmt.Errorf("unknown field %q", key)
		}
		if seen[key] {
			return fmt.Errorf("duplicate field %q", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("the body must hold exactly one JSON object")
	}
	strict := json.NewDecoder(bytes.NewReader(data))
	strict.DisallowUnknownFields()
	return strict.Decode(v)
}

var namesCache sync.Map // reflect.Type -> map[string]bool

// jsonNames returns the JSON names of the fields of the struct v points
// to.
func jsonNames(v any) (map[string]bool, error) {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("contract: Strict needs a pointer to a struct, not %T", v)
	}
	t = t.Elem()
	if m, ok := namesCache.Load(t); ok {
		return m.(map[string]bool), nil
	}
	m := make(map[string]bool, t.NumField())
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		m[name] = true
	}
	namesCache.Store(t, m)
	return m, nil
}

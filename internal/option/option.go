// Package option describes configuration keys in one table: each key's
// default, unit and one-line help. The table is the single source from
// which a program builds its default config struct, its command-line flags
// and their help, and against which a test checks the documented YAML file.
//
// Keys are dotted paths of koanf struct tags ("limits.max_keys"); a field
// tagged `koanf:",squash"` adds its fields at its parent's level.
package option

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Option documents one configuration key.
type Option struct {
	// Key is the dotted key, as written in YAML: "limits.max_keys".
	Key string
	// Default is the key's default value, of the field's exact type
	// (time.Duration, int, bool, string, []string, or a slice of structs).
	Default any
	// Unit names what a number counts ("bytes", "events"); "" when the
	// type says it (durations, strings, lists).
	Unit string
	// Help is one line for --help: what the key does, and what 0 or ""
	// means when that is not "the default".
	Help string
	// ZeroAllowed marks keys where 0 or "" is a meaning of its own (off,
	// derived, none) rather than "use the default": FillZero leaves them.
	ZeroAllowed bool
}

// Apply sets every option's field in the struct dst points to to its
// Default. It panics when a key names no field or the types differ: the
// table and the struct are written together and a mismatch is a bug.
func Apply(dst any, opts []Option) {
	v := reflect.ValueOf(dst).Elem()
	for _, o := range opts {
		f := Field(v, o.Key)
		f.Set(defaultValue(o, f.Type()))
	}
}

// FillZero replaces the zero-valued fields of dst's options with their
// defaults, except for options that have ZeroAllowed.
func FillZero(dst any, opts []Option) {
	v := reflect.ValueOf(dst).Elem()
	for _, o := range opts {
		if o.ZeroAllowed {
			continue
		}
		f := Field(v, o.Key)
		if f.IsZero() {
			f.Set(defaultValue(o, f.Type()))
		}
	}
}

// CheckNotNegative returns an error naming the first int or duration option
// of dst that is negative.
func CheckNotNegative(src any, opts []Option) error {
	v := reflect.ValueOf(src)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	for _, o := range opts {
		f := Field(v, o.Key)
		if f.Kind() == reflect.Int || f.Kind() == reflect.Int64 {
			if n := f.Int(); n < 0 {
				if f.Type() == reflect.TypeFor[time.Duration]() {
					return fmt.Errorf("%s must not be negative, got %v", o.Key, time.Duration(n))
				}
				return fmt.Errorf("%s must not be negative, got %d", o.Key, n)
			}
		}
	}
	return nil
}

func defaultValue(o Option, t reflect.Type) reflect.Value {
	if o.Default == nil {
		return reflect.Zero(t)
	}
	d := reflect.ValueOf(o.Default)
	if d.Type() != t {
		panic(fmt.Sprintf("option %s: default is %s, field is %s", o.Key, d.Type(), t))
	}
	if d.Kind() == reflect.Slice {
		// Each config gets its own slice: callers may append to it.
		c := reflect.MakeSlice(t, d.Len(), d.Len())
		reflect.Copy(c, d)
		return c
	}
	return d
}

// Field returns the field of struct v that key names.
func Field(v reflect.Value, key string) reflect.Value {
	f, ok := field(v, key)
	if !ok {
		panic(fmt.Sprintf("option %s: no such field in %s", key, v.Type()))
	}
	return f
}

func field(v reflect.Value, key string) (reflect.Value, bool) {
	name, rest, nested := strings.Cut(key, ".")
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("koanf")
		if tag == ",squash" {
			if f, ok := field(v.Field(i), key); ok {
				return f, true
			}
			continue
		}
		if tag != name {
			continue
		}
		if !nested {
			return v.Field(i), true
		}
		if sf.Type.Kind() == reflect.Struct {
			return field(v.Field(i), rest)
		}
	}
	return reflect.Value{}, false
}

// Leaves lists the dotted keys of every configurable leaf field of the
// struct type t (fields tagged koanf:"-" are not configurable), so a test
// can check that a table covers a struct exactly.
func Leaves(t reflect.Type) []string {
	var out []string
	leaves(t, "", &out)
	return out
}

func leaves(t reflect.Type, prefix string, out *[]string) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("koanf")
		if !sf.IsExported() || tag == "-" || tag == "" {
			continue
		}
		if tag == ",squash" {
			leaves(sf.Type, prefix, out)
			continue
		}
		if sf.Type.Kind() == reflect.Struct {
			leaves(sf.Type, prefix+tag+".", out)
			continue
		}
		*out = append(*out, prefix+tag)
	}
}

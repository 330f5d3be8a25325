package httpparse

import (
	"errors"
	"slices"
	"testing"
)

func TestNextQuery(t *testing.T) {
	tests := []struct {
		name string
		q    string
		want []string // name, value, name, value, ...
	}{
		{"two_pairs", "key=a&key=b", []string{"key", "a", "key", "b"}},
		{"no_equals", "flag&x=1", []string{"flag", "", "x", "1"}},
		{"empty_value_and_name", "a=&=b", []string{"a", "", "", "b"}},
		{"value_with_equals", "a=b=c", []string{"a", "b=c"}},
		{"empty_pairs", "&a=1&&", []string{"", "", "a", "1", "", ""}},
		{"trailing_ampersand", "a=1&", []string{"a", "1"}},
		{"semicolon_is_data", "a=1;b=2", []string{"a", "1;b=2"}},
		{"still_encoded", "k%20y=v+w", []string{"k%20y", "v+w"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for q := []byte(tt.q); len(q) > 0; {
				var name, value []byte
				name, value, q = NextQuery(q)
				got = append(got, string(name), string(value))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("NextQuery loop over %q = %q, want %q", tt.q, got, tt.want)
			}
		})
	}
}

func TestAppendUnescape(t *testing.T) {
	tests := []struct {
		name string
		in   string
		plus bool
		want string
		err  error
	}{
		{"plain", "abc", true, "abc", nil},
		{"empty", "", true, "", nil},
		{"space", "a%20b", false, "a b", nil},
		{"plus_in_query", "a+b", true, "a b", nil},
		{"plus_in_path", "a+b", false, "a+b", nil},
		{"upper_and_lower_hex", "%4a%4B", false, "JK", nil},
		{"utf8", "%e2%82%AC", false, "€", nil},
		{"escaped_percent_and_plus", "%25%2B", true, "%+", nil},
		{"slash_decoded", "a%2Fb", false, "a/b", nil},
		{"bad_hex", "a%zzb", true, "", ErrMalformed},
		{"bad_second_digit", "%4g", true, "", ErrMalformed},
		{"short", "a%2", true, "", ErrMalformed},
		{"lone_percent", "%", true, "", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("prefix:")
			got, err := AppendUnescape(dst, []byte(tt.in), tt.plus)
			if !errors.Is(err, tt.err) {
				t.Fatalf("AppendUnescape(%q) error %v, want %v", tt.in, err, tt.err)
			}
			if err != nil {
				if string(got) != "prefix:" {
					t.Errorf("on error got %q, want dst unchanged", got)
				}
				return
			}
			if string(got) != "prefix:"+tt.want {
				t.Errorf("AppendUnescape(%q) = %q, want %q", tt.in, got, "prefix:"+tt.want)
			}
		})
	}
}

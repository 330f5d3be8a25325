package hub

import (
	"slices"
	"testing"

	"github.com/sseloop/sseloop/store"
)

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		name  string
		id    uint64
		event string
		data  string
		want  string
	}{
		{"one_line", 1, "", "hello", "id: 1\ndata: hello\n\n"},
		{"named", 7, "update", "x", "id: 7\nevent: update\ndata: x\n\n"},
		{"lf_lines", 2, "", "a\nb", "id: 2\ndata: a\ndata: b\n\n"},
		{"crlf_lines", 3, "", "a\r\nb", "id: 3\ndata: a\ndata: b\n\n"},
		{"bare_cr_splits", 4, "", "a\rb", "id: 4\ndata: a\ndata: b\n\n"},
		{"trailing_newline", 5, "", "a\n", "id: 5\ndata: a\ndata: \n\n"},
		{"empty", 6, "", "", "id: 6\ndata: \n\n"},
		{"field_injection_is_data", 8, "", "x\n\nid: 99\ndata: evil", "id: 8\ndata: x\ndata: \ndata: id: 99\ndata: data: evil\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendFrame(nil, tt.id, tt.event, []byte(tt.data))); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAppendPokeEscapes(t *testing.T) {
	got := string(AppendPoke(nil, "a\"b\\c\x01\xff", 12, 34))
	want := `{"key":"a\"b\\c\u0001\ufffd","id":"12","ts":34}`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestCoalescePokes(t *testing.T) {
	evs := []store.Event{
		{ID: 1, Key: "k"},                    // poke, superseded by 4
		{ID: 2, Key: "k", Data: []byte("x")}, // data: kept
		{ID: 3, Key: "k", Name: "n"},         // named poke, superseded by 5
		{ID: 4, Key: "k"},                    // last plain poke: kept
		{ID: 5, Key: "k", Name: "n"},         // last named poke: kept
		{ID: 6, Key: "k", Data: []byte("y")}, // data: kept
	}
	got := coalescePokes(evs, []int32{0, 1, 2, 3, 4, 5})
	var ids []uint64
	for _, i := range got {
		ids = append(ids, evs[i].ID)
	}
	if want := []uint64{2, 4, 5, 6}; !slices.Equal(ids, want) {
		t.Fatalf("kept %v, want %v", ids, want)
	}
}

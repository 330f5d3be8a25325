package engine

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sseloop/sseloop/internal/option"
)

func TestOptionsCoverConfigExactly(t *testing.T) {
	// Why: Options is the one place a default is written; a Config field
	// without an entry would have no default, no flag and no help.
	var keys []string
	for _, o := range Options {
		if o.Help == "" || strings.Contains(o.Help, "\n") {
			t.Errorf("%s: help must be one non-empty line", o.Key)
		}
		keys = append(keys, o.Key)
	}
	leaves := option.Leaves(reflect.TypeFor[Config]())
	slices.Sort(keys)
	slices.Sort(leaves)
	if !slices.Equal(keys, leaves) {
		t.Fatalf("Options keys %q\nConfig fields %q", keys, leaves)
	}
}

func TestZeroMeansDefault(t *testing.T) {
	c := Config{Limits: Limits{MaxKeys: 5}}
	if err := c.fillDefaults(); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	if c.Limits.MaxKeys != 5 || c.Heartbeat != d.Heartbeat || c.Limits.MaxBodyBytes != 1<<20 ||
		c.Auth.CookieName != "sseloop_token" || c.Listen != ":8080" || c.Limits.MaxConns <= 0 {
		t.Fatalf("fillDefaults: %+v", c)
	}
}

func TestNegativeValueNamesTheKey(t *testing.T) {
	c := DefaultConfig()
	c.Limits.IdleTimeout = -time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "limits.idle_timeout") {
		t.Fatalf("err = %v", err)
	}
	c = DefaultConfig()
	c.Limits.MaxOutboundBytes = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "limits.max_outbound_bytes") {
		t.Fatalf("err = %v", err)
	}
}

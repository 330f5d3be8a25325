package engine

import (
	"context"

	"github.com/panjf2000/gnet/v2"
	"github.com/sseloop/sseloop/httpparse"
	"github.com/sseloop/sseloop/hub"
)

// loop is the engine's state of one gnet event loop: the parser and scratch
// buffers its requests share, and the hub's state of the same loop. Every
// field is owned by that loop's goroutine.
type loop struct {
	e  *Engine
	el gnet.EventLoop
	hl *hub.Loop

	req  httpparse.Request // parser state, reused for every request on this loop
	out  []byte            // response scratch
	body []byte            // decoded chunked bodies
	keys [][]byte          // decoded subscription keys
	tok  []byte            // a token unescaped from the query
}

func newLoop(e *Engine, el gnet.EventLoop) *loop {
	l := &loop{e: e, el: el}
	l.hl = e.hub.NewLoop(l)
	return l
}

// Execute runs fn on the loop's goroutine (hub.Executor). It fails only
// while the engine shuts down, when there is nothing left to do.
func (l *loop) Execute(fn func()) {
	_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		fn()
		return nil
	}))
}

package engine

import (
	_ "embed"
)

// demoPage is the page served at GET /: subscribe to a key, trigger it and
// watch events arrive, in any browser, with no build step.
//
//go:embed demo/index.html
var demoPage []byte

// demoResponses are built once: the page never changes while running.
var demoResponses = [2][]byte{
	appendResponse(nil, 200, "text/html; charset=utf-8", demoPage, false, false),
	appendResponse(nil, 200, "text/html; charset=utf-8", demoPage, true, false),
}

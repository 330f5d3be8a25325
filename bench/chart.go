package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Chart draws an SVG with two panels: server memory per idle connection,
// and fan-out latency percentiles, one bar per server in results. Missing
// scenarios leave their panel empty.
func Chart(results []*Result) []byte {
	const (
		w        = 900
		top, bot = 60, 360
	)
	colors := map[string]string{ServerSseloop: "#2b8a3e", ServerSseloopRef: "#94d82d", ServerBaseline: "#c92a2a", ServerMercure: "#1864ab", ServerMercureBolt: "#5f3dc4"}
	servers := resultServers(results)
	h := bot + 40 + 16*len(servers) // one throughput note per server below the panels
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	conns := 0
	for _, r := range results {
		conns = max(conns, r.Conns)
	}
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" text-anchor="middle">%s, %d connections</text>`+"\n", w/2, html.EscapeString(strings.Join(servers, " vs ")), conns)

	// Legend.
	for i, s := range servers {
		x := w - 100*len(servers) + i*100
		fmt.Fprintf(&b, `<rect x="%d" y="36" width="12" height="12" fill="%s"/><text x="%d" y="46">%s</text>`+"\n", x, colors[s], x+16, s)
	}

	type bar struct {
		label, server string
		v             float64
	}
	panel := func(x0, x1 int, title, unit string, bars []bar) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" text-anchor="middle">%s</text>`+"\n", (x0+x1)/2, top+4, html.EscapeString(title))
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, bot, x1, bot)
		if len(bars) == 0 {
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="gray">no data</text>`+"\n", (x0+x1)/2, (top+bot)/2)
			return
		}
		maxV := 0.0
		for _, br := range bars {
			maxV = max(maxV, br.v)
		}
		if maxV <= 0 {
			maxV = 1
		}
		slot := float64(x1-x0) / float64(len(bars))
		for i, br := range bars {
			bh := br.v / maxV * float64(bot-top-40)
			x := float64(x0) + slot*float64(i) + slot*0.15
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, float64(bot)-bh, slot*0.7, bh, colors[br.server])
			label := short(br.v) + unit
			if slot < 45 { // many bars: the unit is in the panel title
				label = short(br.v)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x+slot*0.35, float64(bot)-bh-4, html.EscapeString(label))
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x+slot*0.35, bot+16, html.EscapeString(br.label))
		}
	}

	var mem []bar
	for _, s := range servers {
		if r := find(results, s, ScenarioIdle); r != nil {
			mem = append(mem, bar{s, s, r.RSSPerConn})
		}
	}
	panel(40, 300, "server memory per idle connection", " B", mem)

	var lat []bar
	for _, p := range []struct {
		name string
		get  func(LatencyMS) float64
	}{{"p50", func(l LatencyMS) float64 { return l.P50 }}, {"p90", func(l LatencyMS) float64 { return l.P90 }},
		{"p99", func(l LatencyMS) float64 { return l.P99 }}, {"max", func(l LatencyMS) float64 { return l.Max }}} {
		for _, s := range servers {
			if r := find(results, s, ScenarioFanout); r != nil {
				lat = append(lat, bar{p.name, s, p.get(r.Latency)})
			}
		}
	}
	panel(360, 860, "fan-out latency, ms (one key, all connections)", " ms", lat)

	var notes []string
	for _, s := range servers {
		if r := find(results, s, ScenarioThroughput); r != nil {
			notes = append(notes, fmt.Sprintf("%s throughput: %s deliveries/s, lost %d", s, short(r.DeliveriesPerSecond), r.Lost))
		}
	}
	for i, n := range notes {
		fmt.Fprintf(&b, `<text x="40" y="%d">%s</text>`+"\n", bot+40+i*16, html.EscapeString(n))
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// short formats v with three significant digits.
func short(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

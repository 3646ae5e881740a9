package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/grbd/grbd/internal/freeport"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Proxies hold one embedded toxiproxy proxy per directed member link: proxy
// "A->B" listens on B's address (another port) and forwards to B's peer
// listener, and member A is started with --dial-override naming it, so
// A's connections to B carry the proxy's toxics (latency, bandwidth) and can
// be cut.
//
// A member that does not honour --dial-override bypasses the proxies;
// Accepted tells whether any connection went through one, and scenarios
// that need the proxies skip when none did.
type Proxies struct {
	srv   *toxiproxy.ApiServer
	ev    *Events
	links map[string]*toxiproxy.Proxy // "A->B"
	from  map[string][]string         // A -> ["B=host:port", ...]

	mu       sync.Mutex
	accepted map[string]int // proxy name -> connections accepted
}

func linkName(from, to string) string { return from + "->" + to }

// newLinkProxies starts a proxy for every ordered pair of members.
func newLinkProxies(c *Cluster) (*Proxies, error) {
	p := &Proxies{ev: c.ev, links: map[string]*toxiproxy.Proxy{}, from: map[string][]string{}, accepted: map[string]int{}}
	logger := zerolog.New(acceptCounter{p}).Level(zerolog.InfoLevel)
	p.srv = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), logger)
	for _, a := range c.members {
		for _, b := range c.members {
			if a == b {
				continue
			}
			ports, err := freeport.Ports(b.IP, 1)
			if err != nil {
				p.Close()
				return nil, err
			}
			listen := net.JoinHostPort(b.IP, strconv.Itoa(ports[0]))
			px := toxiproxy.NewProxy(p.srv, linkName(a.Name, b.Name), listen, b.Address)
			if err := px.Start(); err != nil {
				p.Close()
				return nil, fmt.Errorf("chaos: proxy %s: %w", px.Name, err)
			}
			p.links[px.Name] = px
			p.from[a.Name] = append(p.from[a.Name], b.Name+"="+px.Listen)
		}
	}
	return p, nil
}

// overrides is the --dial-override value for member from.
func (p *Proxies) overrides(from string) string { return strings.Join(p.from[from], ",") }

// acceptCounter is the proxies' log sink: it counts "Accepted client" lines
// per proxy and drops the rest.
type acceptCounter struct{ p *Proxies }

func (a acceptCounter) Write(b []byte) (int, error) {
	var line struct {
		Name    string `json:"name"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &line) == nil && line.Message == "Accepted client" {
		a.p.mu.Lock()
		a.p.accepted[line.Name]++
		a.p.mu.Unlock()
	}
	return len(b), nil
}

// Accepted is the number of connections proxy from->to accepted.
func (p *Proxies) Accepted(from, to string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted[linkName(from, to)]
}

func (p *Proxies) link(from, to string) (*toxiproxy.Proxy, error) {
	px, ok := p.links[linkName(from, to)]
	if !ok {
		return nil, fmt.Errorf("chaos: no proxy %s", linkName(from, to))
	}
	return px, nil
}

// addToxic adds a toxic on one stream ("upstream": from -> to, "downstream":
// to -> from).
func (p *Proxies) addToxic(from, to, typ, stream string, attrs map[string]any) error {
	px, err := p.link(from, to)
	if err != nil {
		return err
	}
	spec, err := json.Marshal(map[string]any{
		"name": typ + "_" + stream, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs,
	})
	if err != nil {
		return err
	}
	if _, err := px.Toxics.AddToxicJson(strings.NewReader(string(spec))); err != nil {
		return fmt.Errorf("chaos: toxic %s on %s: %w", typ, px.Name, err)
	}
	return nil
}

// Latency delays both directions of link from->to by latency ± jitter.
func (p *Proxies) Latency(from, to string, latency, jitter time.Duration) error {
	for _, s := range []string{"upstream", "downstream"} {
		if err := p.addToxic(from, to, "latency", s, map[string]any{"latency": latency.Milliseconds(), "jitter": jitter.Milliseconds()}); err != nil {
			return err
		}
	}
	p.ev.Add(EvLatency, linkName(from, to), "%v ± %v each way", latency, jitter)
	return nil
}

// Bandwidth limits the from->to direction of the link to kbPerSec KB/s.
func (p *Proxies) Bandwidth(from, to string, kbPerSec int64) error {
	if err := p.addToxic(from, to, "bandwidth", "upstream", map[string]any{"rate": kbPerSec}); err != nil {
		return err
	}
	p.ev.Add(EvBandwidth, linkName(from, to), "%d KB/s", kbPerSec)
	return nil
}

// Clear removes every toxic of link from->to.
func (p *Proxies) Clear(from, to string) error {
	px, err := p.link(from, to)
	if err != nil {
		return err
	}
	px.Toxics.ResetToxics(context.Background())
	p.ev.Add(EvHeal, linkName(from, to), "toxics removed")
	return nil
}

// Close stops every proxy.
func (p *Proxies) Close() {
	for _, px := range p.links {
		px.Stop()
	}
}

package main

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// A slow datastore, and what clients do to it. Every GET/HEAD /folder/ request of a datastore
// waits its latency before the first byte; the bytes of all its downloads together are paced
// by one token bucket (bandwidth in megabits/s). Both can change at any time: a download in
// flight sees a new rate within 100 ms. The lab counts requests per datastore (in flight, the
// most at once, requests, bytes) and logs the last requests.

const chunkSize = 32 * 1024 // bytes written (and paced) at a time

type dsIO struct {
	name    string
	mu      sync.Mutex
	latency time.Duration
	mbps    float64
	rate    float64 // bytes per second; 0 = unlimited
	tokens  float64
	last    time.Time

	inFlight, maxInFlight int
	requests, bytes       int64
}

func newDSIO(name string) *dsIO { return &dsIO{name: name} }

// setLimits changes the latency (ms) and bandwidth (Mbit/s) given (nil: unchanged; 0: none).
func (d *dsIO) setLimits(latencyMs, mbps *float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if latencyMs != nil && *latencyMs >= 0 {
		d.latency = time.Duration(*latencyMs * float64(time.Millisecond))
	}
	if mbps != nil && *mbps >= 0 {
		d.mbps = *mbps
		d.rate = *mbps * 1e6 / 8
		d.tokens, d.last = 0, time.Now()
	}
}

func (d *dsIO) limits() (float64, float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return float64(d.latency) / float64(time.Millisecond), d.mbps
}

// take waits until n bytes may go out; the bucket holds at most 50 ms of bytes (one chunk at
// least), and may go into debt by one write so that any chunk size passes.
func (d *dsIO) take(ctx context.Context, n int) error {
	for {
		d.mu.Lock()
		if d.rate <= 0 {
			d.mu.Unlock()
			return nil
		}
		now := time.Now()
		d.tokens += now.Sub(d.last).Seconds() * d.rate
		d.last = now
		burst := d.rate * 0.05
		if burst < chunkSize {
			burst = chunkSize
		}
		if d.tokens > burst {
			d.tokens = burst
		}
		if d.tokens > 0 {
			d.tokens -= float64(n)
			d.mu.Unlock()
			return nil
		}
		wait := time.Duration(-d.tokens / d.rate * float64(time.Second))
		d.mu.Unlock()
		if wait > 100*time.Millisecond {
			wait = 100 * time.Millisecond // re-read the rate: a change applies to downloads in flight
		}
		if wait < time.Millisecond {
			wait = time.Millisecond
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (d *dsIO) begin() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inFlight++
	d.requests++
	if d.inFlight > d.maxInFlight {
		d.maxInFlight = d.inFlight
	}
	return d.latency
}

func (d *dsIO) end() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inFlight--
}

func (d *dsIO) count(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bytes += int64(n)
}

func (d *dsIO) stats() map[string]interface{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return map[string]interface{}{"datastore": d.name, "in_flight": d.inFlight, "max_in_flight": d.maxInFlight,
		"requests": d.requests, "bytes": d.bytes}
}

// resetStats starts counting again (requests in flight stay in flight).
func (d *dsIO) resetStats() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.maxInFlight, d.requests, d.bytes = d.inFlight, 0, 0
}

// ioFor returns the accounting of a datastore by name: the lab's, or one a client added.
func (l *lab) ioFor(name string) *dsIO {
	if ds := l.datastore(name); ds != nil {
		return ds.io
	}
	if _, ok := l.datastoreByName(name); !ok {
		return nil
	}
	v, _ := l.otherIO.LoadOrStore(name, newDSIO(name))
	return v.(*dsIO)
}

// pacedWriter paces and counts a download's body.
type pacedWriter struct {
	http.ResponseWriter
	ds     *dsIO
	ctx    context.Context
	status int
	n      int64
}

func (p *pacedWriter) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	written := 0
	for len(b) > 0 {
		c := b
		if len(c) > chunkSize {
			c = c[:chunkSize]
		}
		if err := p.ds.take(p.ctx, len(c)); err != nil {
			return written, err
		}
		n, err := p.ResponseWriter.Write(c)
		written += n
		p.n += int64(n)
		p.ds.count(n)
		if err != nil {
			return written, err
		}
		b = b[len(c):]
	}
	return written, nil
}

func (p *pacedWriter) Flush() {
	if f, ok := p.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// throttled runs a /folder/ GET or HEAD under its datastore's limits and accounting.
func (l *lab) throttled(w http.ResponseWriter, r *http.Request, serve func(http.ResponseWriter)) {
	dsName := r.URL.Query().Get("dsName")
	ds := l.ioFor(dsName)
	entry := l.requests.start(dsName, r)
	pw := &pacedWriter{ResponseWriter: w, ctx: r.Context(), ds: ds}
	if ds == nil {
		pw.ds = &dsIO{}
	}
	latency := pw.ds.begin()
	defer func() {
		pw.ds.end()
		status := pw.status
		if p := recover(); p != nil {
			l.requests.finish(entry, 0, pw.n)
			panic(p)
		}
		l.requests.finish(entry, status, pw.n)
	}()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	serve(pw)
	if pw.status == 0 {
		pw.status = http.StatusOK
	}
}

package main

import (
	"net/http"
	"sync"
	"time"
)

// requestLog keeps the last /folder/ GET and HEAD requests (bounded), each entered when it
// starts (end_ms null while in flight) and completed when it ends.
type requestLog struct {
	mu      sync.Mutex
	max     int
	seq     int64
	entries []*reqEntry
}

type reqEntry struct {
	Seq       int64    `json:"seq"`
	Datastore string   `json:"datastore"`
	Path      string   `json:"path"`
	Method    string   `json:"method"`
	Range     string   `json:"range"`
	StartMs   float64  `json:"start_ms"`
	EndMs     *float64 `json:"end_ms"`
	Bytes     int64    `json:"bytes"`
	Status    int      `json:"status"`
}

func newRequestLog(max int) *requestLog { return &requestLog{max: max} }

func epochMs(t time.Time) float64 { return float64(t.UnixNano()) / 1e6 }

func (q *requestLog) start(ds string, r *http.Request) *reqEntry {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.seq++
	e := &reqEntry{Seq: q.seq, Datastore: ds, Path: r.URL.Path, Method: r.Method,
		Range: r.Header.Get("Range"), StartMs: epochMs(time.Now())}
	q.entries = append(q.entries, e)
	if len(q.entries) > q.max {
		q.entries = append([]*reqEntry(nil), q.entries[len(q.entries)-q.max:]...)
	}
	return e
}

func (q *requestLog) finish(e *reqEntry, status int, n int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	end := epochMs(time.Now())
	e.EndMs, e.Status, e.Bytes = &end, status, n
}

// since answers the entries after seq, oldest first (copies).
func (q *requestLog) since(seq int64) []reqEntry {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := []reqEntry{}
	for _, e := range q.entries {
		if e.Seq > seq {
			c := *e
			if e.EndMs != nil {
				end := *e.EndMs
				c.EndMs = &end
			}
			out = append(out, c)
		}
	}
	return out
}

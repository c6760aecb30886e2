package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/messagevault/messagevault"
)

// Consumer cursors: PUT, GET and DELETE /streams/{stream}/cursors/{name},
// GET /streams/{stream}/cursors. They live in storage (messagevault.Cursors),
// so any node serves them without the leader; the stream's read claim
// covers them.

// cursorAnswer is a cursor as the routes show it.
type cursorAnswer struct {
	Name     string `json:"Name"`
	Position int64  `json:"Position"`
	// Lag is the stream's committed position less the cursor's, in
	// bytes.
	Lag int64 `json:"Lag"`
	// ETag is the cursor's version (in lists; single answers carry it
	// in the ETag header).
	ETag string `json:"ETag,omitempty"`
}

// maxCursorBody bounds a cursor PUT's body.
const maxCursorBody = 4 << 10

// cursorsFor authenticates, checks the stream's read claim and returns
// the storage's cursors; it answers the error itself on failure. Writes
// (write set) go through the leader, which holds the storage for writing
// (the local backend's compare-and-swap holds within its process): a
// follower forwards them, and answers false.
func (s *Server) cursorsFor(w http.ResponseWriter, r *http.Request, write bool, body []byte) (string, messagevault.Cursors, bool) {
	name, ok := s.streamFor(w, r, false)
	if !ok {
		return "", nil, false
	}
	store := s.cfg.Storage
	if write {
		v := s.vault.Load()
		if v == nil {
			s.forward(w, r, body)
			return "", nil, false
		}
		store = v.Storage()
	}
	cs, ok := store.(messagevault.Cursors)
	if !ok {
		s.writeError(w, r, fmt.Errorf("cursors: %w", messagevault.ErrNoCursors))
		return "", nil, false
	}
	if cur := r.PathValue("name"); cur != "" {
		if err := messagevault.CheckCursorName(cur); err != nil {
			s.writeError(w, r, err)
			return "", nil, false
		}
	}
	return name, cs, true
}

// extentOf returns the stream's committed extent: the writer's position
// while this node leads, storage's otherwise. A stream never written is
// ErrStreamNotFound.
func (s *Server) extentOf(ctx context.Context, name string) (messagevault.Extent, error) {
	reader, closeReader, err := s.reader(ctx, name)
	if err != nil {
		return messagevault.Extent{}, err
	}
	defer closeReader()
	return reader.Extent(ctx)
}

// etagHeader quotes an ETag for the ETag header.
func etagHeader(etag string) string { return `"` + etag + `"` }

// ifMatch reads If-Match: one ETag, quoted or not, or "*" (any version
// of a cursor that exists); "" when absent. A weak ETag never matches a
// cursor's (they are strong): that is a 412, as RFC 9110 has it.
func ifMatch(r *http.Request) (string, error) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	switch {
	case v == "":
		return "", nil
	case strings.Contains(v, ","):
		return "", badRequest("If-Match %q: give the one ETag the cursor was read with", v)
	case strings.HasPrefix(v, "W/"):
		return "", fmt.Errorf("If-Match %s is a weak ETag, and cursors have strong ones: %w", v, messagevault.ErrCursorChanged)
	}
	return strings.Trim(v, `"`), nil
}

// handlePutCursor serves PUT /streams/{stream}/cursors/{name} {"Position": N}.
func (s *Server) handlePutCursor(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxCursorBody+1))
	if err == nil && len(data) > maxCursorBody {
		err = fmt.Errorf("more than %d bytes", maxCursorBody)
	}
	name, cs, ok := s.cursorsFor(w, r, true, data)
	if !ok {
		return
	}
	cursor := r.PathValue("name")
	etag, ierr := ifMatch(r)
	if ierr != nil {
		s.writeError(w, r, ierr)
		return
	}
	var body struct{ Position *int64 }
	if err == nil {
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields()
		err = dec.Decode(&body)
	}
	if err != nil || body.Position == nil || *body.Position < 0 {
		s.writeError(w, r, badRequest(`cursor body: want {"Position": N}, N a position from 0 (%v)`, err))
		return
	}
	pos := *body.Position
	ctx := r.Context()
	if err := s.checkCursorPosition(ctx, name, pos); err != nil {
		s.writeError(w, r, err)
		return
	}
	if etag == "*" {
		// Any version, if there is one: the current one.
		cur, err := cs.ReadCursor(ctx, name, cursor)
		if errors.Is(err, messagevault.ErrCursorNotFound) {
			err = fmt.Errorf("If-Match *: cursor %q does not exist: %w", cursor, messagevault.ErrCursorChanged)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		etag = cur.ETag
	}
	c, err := cs.WriteCursor(ctx, name, cursor, pos, etag)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("ETag", etagHeader(c.ETag))
	writeJSON(w, http.StatusOK, map[string]any{"Name": c.Name, "Position": c.Position})
}

// checkCursorPosition checks that pos is where a consumer can resume: a
// record's start, or the committed position, and not trimmed away.
func (s *Server) checkCursorPosition(ctx context.Context, name string, pos int64) error {
	reader, closeReader, err := s.reader(ctx, name)
	if err != nil {
		return err
	}
	defer closeReader()
	e, err := reader.Extent(ctx)
	switch {
	case err != nil:
		return err
	case pos > e.Position:
		return badRequest("position %d is past the stream's committed position %d", pos, e.Position)
	case pos < e.Start:
		return badRequest("position %d was trimmed: the stream starts at %d", pos, e.Start)
	case pos == e.Position:
		return nil
	}
	for _, err := range reader.Records(ctx, pos, e.Position) {
		if errors.Is(err, messagevault.ErrNotRecordStart) {
			return badRequest("position %d is not a message's start: give an Offset or Next a read answered", pos)
		}
		return err
	}
	return nil
}

// handleGetCursor serves GET /streams/{stream}/cursors/{name}.
func (s *Server) handleGetCursor(w http.ResponseWriter, r *http.Request) {
	name, cs, ok := s.cursorsFor(w, r, false, nil)
	if !ok {
		return
	}
	ctx := r.Context()
	e, err := s.extentOf(ctx, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := cs.ReadCursor(ctx, name, r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("ETag", etagHeader(c.ETag))
	writeJSON(w, http.StatusOK, cursorAnswer{Name: c.Name, Position: c.Position, Lag: max(e.Position-c.Position, 0)})
}

// handleListCursors serves GET /streams/{stream}/cursors.
func (s *Server) handleListCursors(w http.ResponseWriter, r *http.Request) {
	name, cs, ok := s.cursorsFor(w, r, false, nil)
	if !ok {
		return
	}
	ctx := r.Context()
	e, err := s.extentOf(ctx, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := cs.ListCursors(ctx, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]cursorAnswer, 0, len(list))
	for _, c := range list {
		out = append(out, cursorAnswer{Name: c.Name, Position: c.Position, Lag: max(e.Position-c.Position, 0), ETag: c.ETag})
	}
	writeJSON(w, http.StatusOK, out)
}

// handleDeleteCursor serves DELETE /streams/{stream}/cursors/{name}.
func (s *Server) handleDeleteCursor(w http.ResponseWriter, r *http.Request) {
	name, cs, ok := s.cursorsFor(w, r, true, nil)
	if !ok {
		return
	}
	if err := cs.DeleteCursor(r.Context(), name, r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// cursorLag is the collector of messagevault_cursor_lag_bytes: at each
// scrape it lists every stream's cursors (one listing per stream) and
// reports each one's lag behind the committed position.
type cursorLag struct {
	s    *Server
	desc *prometheus.Desc
}

func newCursorLag(s *Server) *cursorLag {
	return &cursorLag{s: s, desc: prometheus.NewDesc("messagevault_cursor_lag_bytes",
		"How far each consumer cursor is behind its stream's committed position, in bytes.", []string{"stream", "cursor"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *cursorLag) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *cursorLag) Collect(ch chan<- prometheus.Metric) {
	cs, ok := c.s.cfg.Storage.(messagevault.Cursors)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos, err := c.s.listStreams(ctx)
	if err != nil {
		c.s.log.Warn("cursor lag metric: list streams", "err", err)
		return
	}
	for _, in := range infos {
		list, err := cs.ListCursors(ctx, in.Name)
		if err != nil {
			c.s.log.Warn("cursor lag metric: list cursors", "stream", in.Name, "err", err)
			continue
		}
		for _, cur := range list {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(max(in.Position-cur.Position, 0)), in.Name, cur.Name)
		}
	}
}

// handleCursorGrant serves GET /streams/{stream}/cursors/{name}/grant: a
// URL that reads and writes this one cursor straight in storage (a blob
// SAS on Azure), for a consumer that keeps the server out of its path; the
// stream's read claim.
func (s *Server) handleCursorGrant(w http.ResponseWriter, r *http.Request) {
	name, _, ok := s.cursorsFor(w, r, false, nil)
	if !ok {
		return
	}
	g, ok := s.cfg.Storage.(messagevault.CursorGranter)
	if !ok {
		s.writeError(w, r, fmt.Errorf("cursor grant: %w", messagevault.ErrNoCursorGrants))
		return
	}
	u, err := g.CursorGrant(r.Context(), name, r.PathValue("name"), s.cfg.GrantTTL)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"Signature": u})
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"

	vapi "github.com/vmware/govmomi/vapi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// vSphere tags, served as vCenter serves them: govmomi's vAPI simulator (the /rest tagging
// endpoints: cis/session, cis/tagging/category, tag, tag-association) mounted under /rest.
// The spec's categories and tags are created at start and attached to the VMs through the
// same endpoints. Two fixes over the simulator: the session POST checks the lab's credentials
// (it took any), an empty list answers {"value": []} (it answered {} or null), and actions
// without arguments take an empty body.

type tagStore struct {
	mu      sync.Mutex
	handler http.Handler
	user    string
	pass    string
	session string
	cats    map[string]string // category name -> id
	ids     map[TagRef]string // tag -> id
}

func newTagStore(user, pass string) *tagStore {
	_, h := vapi.New(&url.URL{Scheme: "http", Host: "127.0.0.1", User: url.UserPassword(user, pass)}, nil)
	return &tagStore{handler: h, user: user, pass: pass, cats: map[string]string{}, ids: map[TagRef]string{}}
}

func (t *tagStore) find(ref TagRef) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ids[ref]
}

func (t *tagStore) categoryIDs() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]string{}
	for k, v := range t.cats {
		out[k] = v
	}
	return out
}

// call runs one request on the vAPI handler in process and decodes its "value".
func (t *tagStore) call(method, path string, body interface{}, out interface{}) error {
	var buf bytes.Buffer
	if body != nil {
		_ = json.NewEncoder(&buf).Encode(body)
	}
	r := httptest.NewRequest(method, "/rest"+path, &buf)
	if t.session == "" {
		r.SetBasicAuth(t.user, t.pass)
	} else {
		r.Header.Set("vmware-api-session-id", t.session)
	}
	rec := httptest.NewRecorder()
	t.handler.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d %s", method, path, rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	if out == nil {
		return nil
	}
	var v struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		return err
	}
	return json.Unmarshal(v.Value, out)
}

// create makes the spec's categories and tags.
func (t *tagStore) create(spec *LabSpec) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.session == "" {
		if err := t.call(http.MethodPost, "/com/vmware/cis/session", nil, &t.session); err != nil {
			return fmt.Errorf("tags: %w", err)
		}
	}
	for _, c := range spec.TagCategories {
		assoc := c.AssociableTypes
		if assoc == nil {
			assoc = []string{}
		}
		var id string
		create := map[string]interface{}{"create_spec": map[string]interface{}{"name": c.Name,
			"description": c.Description, "cardinality": c.Cardinality, "associable_types": assoc}}
		if err := t.call(http.MethodPost, "/com/vmware/cis/tagging/category", create, &id); err != nil {
			return fmt.Errorf("tag category %s: %w", c.Name, err)
		}
		t.cats[c.Name] = id
		for _, name := range c.Tags {
			var tid string
			create := map[string]interface{}{"create_spec": map[string]interface{}{"name": name,
				"description": "", "category_id": id}}
			if err := t.call(http.MethodPost, "/com/vmware/cis/tagging/tag", create, &tid); err != nil {
				return fmt.Errorf("tag %s:%s: %w", c.Name, name, err)
			}
			t.ids[TagRef{Category: c.Name, Name: name}] = tid
		}
	}
	return nil
}

// attach attaches tags to a VM, as a client's tag-association attach does.
func (t *tagStore) attach(vm types.ManagedObjectReference, refs []TagRef) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ref := range refs {
		id := t.ids[ref]
		body := map[string]interface{}{"object_id": map[string]string{"type": vm.Type, "id": vm.Value}}
		if err := t.call(http.MethodPost, "/com/vmware/cis/tagging/tag-association/id:"+id+"?~action=attach",
			body, nil); err != nil {
			return fmt.Errorf("attach %s:%s: %w", ref.Category, ref.Name, err)
		}
	}
	return nil
}

func restServe(h http.Handler, w http.ResponseWriter, r *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
		}
	}()
	h.ServeHTTP(w, r)
	return true
}

// serveREST passes /rest requests to the vAPI simulator, checking the credentials of a login
// and answering empty lists as vCenter does.
func (l *lab) serveREST(w http.ResponseWriter, r *http.Request) {
	t := l.tags
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/com/vmware/cis/session") &&
		r.URL.Query().Get("~action") == "" {
		if u, p, ok := r.BasicAuth(); !ok || u != t.user || p != t.pass {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"type":"com.vmware.vapi.std.errors.unauthenticated","value":{"messages":[]}}`)
			return
		}
	}
	action := r.URL.Query().Get("~action")
	if r.Method == http.MethodPost && action != "" {
		// vCenter's actions without arguments (list-attached-objects) take no body; the
		// simulator decodes one
		raw, _ := ioutil.ReadAll(r.Body)
		if len(bytes.TrimSpace(raw)) == 0 {
			raw = []byte("{}")
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(raw))
	}
	rec := httptest.NewRecorder()
	if !restServe(t.handler, rec, r) { // the simulator panics on a missing argument
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"type":"com.vmware.vapi.std.errors.invalid_argument","value":{"messages":[]}}`)
		return
	}
	body := rec.Body.Bytes()
	isList := r.Method == http.MethodGet && (strings.HasSuffix(r.URL.Path, "/tagging/category") ||
		strings.HasSuffix(r.URL.Path, "/tagging/tag")) || strings.HasPrefix(action, "list-")
	if rec.Code == http.StatusOK && isList {
		var v struct {
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(body, &v); err == nil && (len(v.Value) == 0 || string(v.Value) == "null") {
			body = []byte(`{"value":[]}` + "\n") // the simulator answered {} or {"value":null}
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	if len(body) > 0 && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

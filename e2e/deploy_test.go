package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/messagevault/messagevault/internal/mvtest"
)

// metricName finds the MessageVault metric names in a PromQL expression.
var metricName = regexp.MustCompile(`messagevault_[a-z_]+`)

// TestShippedAlertsAndDashboard loads deploy/prometheus/alerts.yml and
// deploy/grafana/messagevault.json, checks their shape (every alert has an
// expression, a severity and a summary; every panel a query), and checks
// that every metric they name exists on a running server that has a
// consumer cursor, so that a renamed metric cannot leave an alert that
// never fires.
func TestShippedAlertsAndDashboard(t *testing.T) {
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert       string
				Expr        string
				For         string
				Labels      map[string]string
				Annotations map[string]string
			}
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" || !slices.Contains([]string{"critical", "warning"}, r.Labels["severity"]) {
				t.Errorf("alert %q: needs alert, expr, a severity of critical or warning, and a summary", r.Alert)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") || strings.Count(r.Expr, "{") != strings.Count(r.Expr, "}") {
				t.Errorf("alert %q: unbalanced expression %q", r.Alert, r.Expr)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) < 5 {
		t.Fatalf("alerts.yml holds %d rules", len(exprs))
	}

	var dash struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	b, err = os.ReadFile(filepath.Join("..", "deploy", "grafana", "messagevault.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("messagevault.json: %v", err)
	}
	for _, p := range dash.Panels {
		if p.Title == "" || len(p.Targets) == 0 || p.Targets[0].Expr == "" {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}

	s := mvtest.Start(t, t.TempDir(), nil)
	mustCLI(t, s, "", "publish", "orders", "one")
	mustCLI(t, s, "", "cursors", "set", "orders", "billing", "--position", "0")
	status, body, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	if status != 200 {
		t.Fatalf("/metrics: %d", status)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			have[strings.Fields(name)[0]] = true
		}
	}
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if trimmed, ok := strings.CutSuffix(name, suffix); ok && have[trimmed] {
					base = trimmed
				}
			}
			if !have[base] {
				t.Errorf("%q names %s, which the server does not export", e, name)
			}
		}
	}
}

package kafka

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Every option's documented default, as its comment (and the package
// doc's Defaults section) states it. TestDefaultsOnTheWire checks those a
// broker sees.
func TestDocumentedDefaults(t *testing.T) {
	tr, err := New([]string{"localhost:9092"})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	c := tr.cfg
	for _, tt := range []struct {
		name      string
		got, want any
	}{
		{"ClientID", c.clientID, "syncbridge"},
		{"TLS: plain TCP", c.tls == nil, true},
		{"SASL: none", c.sasl == nil, true},
		{"RequiredAcks", c.acks, RequireAll},
		{"MaxProduceBytes", c.maxProduceBytes, 1 << 20},
		{"DefaultMaxProduceBytes", DefaultMaxProduceBytes, 1 << 20},
		{"FetchMaxWait", c.fetchMaxWait, 250 * time.Millisecond},
		{"DefaultFetchMaxWait", DefaultFetchMaxWait, 250 * time.Millisecond},
		{"FetchMaxBytes", c.fetchMaxBytes, 16 << 20},
		{"DefaultFetchMaxBytes", DefaultFetchMaxBytes, 16 << 20},
		{"CreateTopics: topics must exist", c.createTopics, false},
		{"Logger: no logging", c.logger == nil && tr.log == nil, true},
		{"DialTimeout", c.dialTimeout, 5 * time.Second},
		{"DefaultDialTimeout", DefaultDialTimeout, 5 * time.Second},
		{"RequestTimeout", c.requestTimeout, 30 * time.Second},
		{"DefaultRequestTimeout", DefaultRequestTimeout, 30 * time.Second},
		{"MetadataMaxAge", c.metadataMaxAge, 5 * time.Second},
		{"DefaultMetadataMaxAge", DefaultMetadataMaxAge, 5 * time.Second},
		{"GroupTimeouts session", c.sessionTimeout, 10 * time.Second},
		{"DefaultSessionTimeout", DefaultSessionTimeout, 10 * time.Second},
		{"GroupTimeouts heartbeat", c.heartbeat, 500 * time.Millisecond},
		{"DefaultHeartbeatInterval", DefaultHeartbeatInterval, 500 * time.Millisecond},
		{"GroupTimeouts rebalance", c.rebalanceTimeout, 10 * time.Second},
		{"DefaultRebalanceTimeout", DefaultRebalanceTimeout, 10 * time.Second},
		{"RetryBackoff first", c.retryBackoff, 50 * time.Millisecond},
		{"DefaultRetryBackoff", DefaultRetryBackoff, 50 * time.Millisecond},
		{"RetryBackoff max", c.maxRetryBackoff, time.Second},
		{"DefaultMaxRetryBackoff", DefaultMaxRetryBackoff, time.Second},
		{"CommitInterval", c.commitInterval, 100 * time.Millisecond},
		{"DefaultCommitInterval", DefaultCommitInterval, 100 * time.Millisecond},
		{"Compression", c.compression, NoCompression},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %v, documented %v", tt.name, tt.got, tt.want)
		}
	}
}

// Issue 8 and the package's promise: a user imports syncbridge, not
// kafka-go. No exported declaration of the package (function signatures,
// exported types, their exported fields and methods, exported variables
// and constants) names a kafka-go type.
func TestNoKafkaGoInAPI(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var found []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		// The names under which this file imports kafka-go's packages.
		kgo := make(map[string]bool)
		for _, im := range f.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			if !strings.HasPrefix(path, "github.com/segmentio/kafka-go") {
				continue
			}
			n := path[strings.LastIndex(path, "/")+1:]
			if path == "github.com/segmentio/kafka-go" {
				n = "kafka"
			}
			if im.Name != nil {
				n = im.Name.Name
			}
			kgo[n] = true
		}
		if len(kgo) == 0 {
			continue
		}
		check := func(what string, n ast.Node) {
			if n == nil {
				return
			}
			ast.Inspect(n, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.StructType:
					for _, fl := range n.Fields.List {
						exported := len(fl.Names) == 0 // embedded
						for _, id := range fl.Names {
							exported = exported || id.IsExported()
						}
						if exported {
							ast.Inspect(fl.Type, func(n ast.Node) bool { return visit(n, kgo, fset, what, &found) })
						}
					}
					return false
				case *ast.InterfaceType:
					for _, m := range n.Methods.List {
						exported := len(m.Names) == 0
						for _, id := range m.Names {
							exported = exported || id.IsExported()
						}
						if exported {
							ast.Inspect(m.Type, func(n ast.Node) bool { return visit(n, kgo, fset, what, &found) })
						}
					}
					return false
				}
				return visit(n, kgo, fset, what, &found)
			})
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				if d.Recv != nil {
					recv := d.Recv.List[0].Type
					if s, ok := recv.(*ast.StarExpr); ok {
						recv = s.X
					}
					if id, ok := recv.(*ast.Ident); !ok || !id.IsExported() {
						continue
					}
				}
				check(d.Name.Name, d.Type)
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							check(s.Name.Name, s.Type)
						}
					case *ast.ValueSpec:
						for i, id := range s.Names {
							if !id.IsExported() {
								continue
							}
							check(id.Name, s.Type)
							if i < len(s.Values) {
								check(id.Name, s.Values[i])
							}
						}
					}
				}
			}
		}
	}
	for _, f := range found {
		t.Error(f)
	}
}

// visit records a reference to a kafka-go package in an exported
// declaration.
func visit(n ast.Node, kgo map[string]bool, fset *token.FileSet, what string, found *[]string) bool {
	if sel, ok := n.(*ast.SelectorExpr); ok {
		if id, ok := sel.X.(*ast.Ident); ok && kgo[id.Name] {
			*found = append(*found, fset.Position(sel.Pos()).String()+": "+what+" names kafka-go's "+id.Name+"."+sel.Sel.Name)
		}
	}
	return true
}

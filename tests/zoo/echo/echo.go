// Parser zoo: Go net/http (Debian golang-go 1.19), stdlib only, default http.Server.
// The handler calls r.ParseForm() (whose error, if any, is "parse_error") and reports
// r.URL.Query() as "query", r.PostForm as "form" and r.Form as "params". Defaults that matter:
// url.ParseQuery since Go 1.17 rejects (drops, with an error) pairs containing ';'; ParseForm
// reads the body only for POST, PUT and PATCH with Content-Type application/x-www-form-urlencoded
// (10 MB cap); the Host header is not in r.Header (it is r.Host).
// Strings that are not valid UTF-8 become {"__bytes_b64": "<base64>"}; a map key that is not
// valid UTF-8 becomes "__bytes_b64:<base64>". Header names are lower-cased from Go's canonical
// form (names that differ only in case end up in one list).
// Usage: go-echo PORT
package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

func zooStr(s string) interface{} {
	if utf8.ValidString(s) {
		return s
	}
	return map[string]string{"__bytes_b64": base64.StdEncoding.EncodeToString([]byte(s))}
}

func zooKey(k string) string {
	if utf8.ValidString(k) {
		return k
	}
	return "__bytes_b64:" + base64.StdEncoding.EncodeToString([]byte(k))
}

// url.Values as JSON: name -> list of values in Go's order. Go maps have no order of their
// own; encoding/json writes the names sorted.
func values(v url.Values) interface{} {
	if v == nil {
		return nil
	}
	m := map[string][]interface{}{}
	for k, vs := range v {
		out := make([]interface{}, len(vs))
		for i, s := range vs {
			out[i] = zooStr(s)
		}
		m[zooKey(k)] = out
	}
	return m
}

func main() {
	var seq int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := atomic.AddInt64(&seq, 1)
		var parseError interface{}
		if err := r.ParseForm(); err != nil {
			parseError = zooStr(err.Error())
		}
		headers := http.Header{}
		for k, vs := range r.Header {
			lk := strings.ToLower(k)
			headers[lk] = append(headers[lk], vs...)
		}
		out := map[string]interface{}{
			"framework":   "go",
			"seq":         n,
			"method":      zooStr(r.Method),
			"route":       zooStr(r.URL.Path),
			"script_name": "",
			"query":       values(r.URL.Query()),
			"form":        values(r.PostForm),
			"params":      values(r.Form),
			"headers":     values(url.Values(headers)),
			"parse_error": parseError,
		}
		body, err := json.Marshal(out)
		if err != nil {
			body, _ = json.Marshal(map[string]interface{}{"framework": "go", "seq": n, "parse_error": "zoo: " + err.Error()})
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		w.Write(body)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Args[1], Handler: handler}
	if err := srv.ListenAndServe(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}

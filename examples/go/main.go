// The Go example: detected by go.mod; `go install` builds bin/hello, the default web
// process, which runs on $PORT.
package main

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
)

func main() {
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "Hello"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from Go %s\n", greeting, runtime.Version())
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

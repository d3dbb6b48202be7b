// slowloris: an http.Server without ReadTimeout or ReadHeaderTimeout (seed,
// chapter 1): clients that dribble their headers hold connections open as
// long as they like.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	// No ReadTimeout, ReadHeaderTimeout, WriteTimeout or IdleTimeout.
	srv := &http.Server{Addr: *addr, Handler: mux}
	log.Printf("listening on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}

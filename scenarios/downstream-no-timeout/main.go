// downstream-no-timeout: a handler calls a slow downstream over HTTP with
// the default client, which has no timeout (seed, chapter 4.1). The
// handler's time is the downstream's time.
//
//	-role server      GET /api calls http://<downstream>/slow and relays it
//	-role downstream  GET /slow answers after -delay
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"
)

func main() {
	role := flag.String("role", "server", "server or downstream")
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	downstream := flag.String("downstream", "127.0.0.1:9001", "downstream address (server role)")
	delay := flag.Duration("delay", 300*time.Millisecond, "downstream answer delay (downstream role)")
	flag.Parse()

	mux := http.NewServeMux()
	switch *role {
	case "downstream":
		mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(*delay)
			fmt.Fprintln(w, "slow answer")
		})
	default:
		url := "http://" + *downstream + "/slow"
		mux.HandleFunc("/api", func(w http.ResponseWriter, r *http.Request) {
			// http.Get uses http.DefaultClient: no timeout at all.
			resp, err := http.Get(url)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			io.Copy(w, resp.Body)
		})
	}
	log.Printf("%s listening on %s", *role, *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

// context-no-deadline: the handler starts a lookup in another goroutine and
// waits for its result or for the request's context, which has no
// deadline: a slow lookup holds the request for as long as it takes.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

// lookup answers after `slow`, from a goroutine of its own.
func lookup(key string, slow time.Duration) <-chan string {
	out := make(chan string, 1)
	go func() {
		time.Sleep(slow)
		out <- "value of " + key
	}()
	return out
}

// await waits for the result or the context: without a deadline on the
// context, only the client going away ends the wait.
//
//go:noinline
func await(ctx context.Context, result <-chan string) (string, error) {
	select {
	case v := <-result:
		return v, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	slow := flag.Duration("slow", 250*time.Millisecond, "how long a lookup takes")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/lookup", func(w http.ResponseWriter, r *http.Request) {
		v, err := await(r.Context(), lookup(r.URL.Query().Get("k"), *slow))
		if err != nil {
			http.Error(w, err.Error(), http.StatusGatewayTimeout)
			return
		}
		fmt.Fprintln(w, v)
	})
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

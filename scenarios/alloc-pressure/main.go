// alloc-pressure: a handler that allocates heavily (seed, chapter 4.2): its
// time goes to the Go allocator and the garbage collector.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
)

type node struct {
	next  *node
	value [6]int64
}

// build allocates n small objects into a list the collector has to trace.
//
//go:noinline
func build(n int) *node {
	var head *node
	for i := 0; i < n; i++ {
		head = &node{next: head, value: [6]int64{int64(i)}}
	}
	return head
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n <= 0 {
			n = 300000
		}
		var sum int64
		for p := build(n); p != nil; p = p.next {
			sum += p.value[0]
		}
		fmt.Fprintln(w, sum)
	})
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

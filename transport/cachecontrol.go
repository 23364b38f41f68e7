package transport

import "net/http"

// privateReads keeps what a caller reads out of shared caches. Connect
// lets side-effect-free RPCs be called with GET, and GET answers are
// cacheable by default: a proxy or CDN in front of the registry would
// otherwise hand one tenant's answer, fetched with its credentials, to the
// next caller of the same URL. Every GET answer varies by Authorization;
// one made with credentials may be stored by no cache at all.
func privateReads(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h := w.Header()
			h.Add("Vary", "Authorization")
			if r.Header.Get("Authorization") != "" {
				h.Set("Cache-Control", "private, no-store")
			}
		}
		next.ServeHTTP(w, r)
	})
}
